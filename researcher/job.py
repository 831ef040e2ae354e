"""A federated training job (FedAvg, optionally FedProx / FedAvgM) across every site of a ``Federation``.

One code request per site covers the whole job: the private assets are matched,
the global weights and the round number are researcher inputs
(``MixedInputPolicy(weights=dict, rnd=int)``), and the request allows
``rounds + 1`` executions (``rounds`` training calls and a final evaluation).
The job never calls a site more often than that, across resumes too: a resume
asks each site how many of its runs released a result (PySyft's output history
of the job's code) and adds the failures that site answered, rather than guessing
from a broken connection whether a call ran (a site that crashed mid-call refunds
that run when it starts again).

Examples
--------
In a notebook, with a connected ``federation`` and a model class ``Net``:

>>> job = FedAvgJob(Net, rounds=5, local_epochs=1, batch_size=32, lr=0.05, min_sites=2)  # doctest: +SKIP
>>> job.dry_run(federation)  # the exact site function, locally on every site's mocks  # doctest: +SKIP
>>> job.submit(federation, reason="digits CNN, 5 rounds")  # doctest: +SKIP
>>> job.wait_for_approval(federation)  # per-site status; denials with the owner's reason  # doctest: +SKIP
>>> result = job.run(federation, checkpoint_dir="runs/cnn")  # resumes from a checkpoint  # doctest: +SKIP
>>> result.save("runs/cnn")  # model.pt, history.json, loss/accuracy plots  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies import reason_with_purpose, schedule, unmask_sum
from researcher.aggregation import ServerMomentum, fedavg
from researcher.federation import ASSETS, Federation
from researcher.progress import report_round
from researcher.results import RoundRecord, TrainingResult, aggregate_evaluations
from researcher.site_function import (
    SiteFunction,
    build_site_function,
    load_model_class,
    model_source,
    state_dict_to_numpy,
)

OPTIMIZERS = ("sgd", "adam")
LOSSES = ("cross_entropy", "nll")
INCOMPLETE_COHORT = "dropped: the cohort was incomplete, masks do not cancel"


@dataclass(frozen=True)
class FedAvgConfig:
    """Hyper-parameters of a job; all of them are shown to the data owners in the site code.

    Parameters
    ----------
    rounds : int, default 5
        Training rounds (each site is then called ``rounds + 1`` times: a final evaluation).
    local_epochs : int, default 1
        Epochs over its training split a site runs per round.
    batch_size : int, default 32
        The sites' batch size.
    lr : float, default 0.05
        The sites' learning rate.
    optimizer : {"sgd", "adam"}, default "sgd"
        The sites' optimizer.
    momentum : float, default 0.0
        SGD's momentum at the sites, in ``[0, 1)``.
    loss : {"cross_entropy", "nll"}, default "cross_entropy"
        The training loss.
    min_sites : int, default 1
        A round needs at least this many answering sites (and the job this many approvals).
    seed : int, default 0
        Seeds the initial model and the sites' shuffling.
    mu : float, default 0.0
        FedProx's proximal coefficient (0: FedAvg).
    server_momentum : float, default 0.0
        FedAvgM's server momentum, in ``[0, 1)`` (0: FedAvg).
    server_lr : float, default 1.0
        FedAvgM's server learning rate.
    secure_aggregation : bool, default False
        Sites release only masked updates; the researcher decodes only their sum.
    max_restarts : int, default 0
        Secure aggregation: how often a round may restart with the survivors after a dropout.
    model_kwargs : dict
        Keyword arguments of the model class (plain data: they travel as a literal).

    Raises
    ------
    ValueError
        When a setting is out of range.

    Examples
    --------
    >>> FedAvgConfig(rounds=3, lr=0.1).local_epochs
    1
    >>> FedAvgConfig(optimizer="lbfgs")
    Traceback (most recent call last):
    ...
    ValueError: optimizer must be one of ('sgd', 'adam') (got 'lbfgs')
    """

    rounds: int = 5
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.0
    loss: str = "cross_entropy"
    min_sites: int = 1
    seed: int = 0
    mu: float = 0.0
    server_momentum: float = 0.0
    server_lr: float = 1.0
    secure_aggregation: bool = False
    max_restarts: int = 0
    model_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        positive = {
            "rounds": self.rounds,
            "local_epochs": self.local_epochs,
            "batch_size": self.batch_size,
            "min_sites": self.min_sites,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1 (got {value!r})")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0 (got {self.lr})")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS} (got {self.optimizer!r})")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES} (got {self.loss!r})")
        if self.mu < 0 or not 0 <= self.server_momentum < 1 or not 0 <= self.momentum < 1:
            raise ValueError("mu must be >= 0; momentum and server_momentum must be in [0, 1)")
        restarts = self.max_restarts
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
            raise ValueError(f"max_restarts must be an integer >= 0 (got {restarts!r})")
        json.dumps(self.model_kwargs)  # must travel as a literal


class JobError(Exception):
    """The job cannot go on (not enough sites approved or answering); the message says which and why."""


class FedAvgJob:
    """Federated averaging of a PyTorch model over the sites of a federation.

    Parameters
    ----------
    model : type, optional
        The model class (an ``nn.Module`` defined in a file or a notebook cell); or give
        ``model_source`` and ``model_name``.
    model_source : str, optional
        The model class as source text (it may use ``torch``, ``nn``, ``F`` and ``np``).
    model_name : str, optional
        The class ``model_source`` defines.
    name : str, default "fedavg"
        The job's name: part of the site function's name (a new job needs a new name).
    purpose : str, default ""
        Why you want the data, in words for the data owners: shown to them verbatim with the request
        (any text, several lines included). A site whose policy has ``[review] require_purpose = true``
        does not approve a request without one.
    **config
        ``FedAvgConfig`` settings (``rounds``, ``lr``, ``min_sites``...).

    Raises
    ------
    ValueError
        When the model is given both or neither way, ``model_name`` is missing, or a setting is wrong.
    TypeError
        When ``purpose`` is not a string.

    Examples
    --------
    >>> source = (
    ...     "class Net(nn.Module):\\n"
    ...     "    def __init__(self):\\n"
    ...     "        super().__init__()\\n"
    ...     "        self.fc = nn.Linear(4, 2)\\n"
    ...     "\\n"
    ...     "    def forward(self, x):\\n"
    ...     "        return self.fc(x.flatten(1))\\n"
    ... )
    >>> job = FedAvgJob(model_source=source, model_name="Net", name="tiny", rounds=3, purpose="a test")
    >>> job.max_calls, sorted(job.initial_weights()), job.purpose
    (4, ['fc.bias', 'fc.weight'], 'a test')
    """

    def __init__(
        self,
        model: type | None = None,
        *,
        model_source: str | None = None,
        model_name: str | None = None,
        name: str = "fedavg",
        purpose: str = "",
        **config: Any,
    ) -> None:
        if not isinstance(purpose, str):
            raise TypeError(f"purpose must be text, shown to the data owners (got {type(purpose).__name__})")
        self.config = FedAvgConfig(**config)
        self.model_class = _model_class(model, model_source, model_name)
        self.name = name
        self.purpose = purpose
        self._function: SiteFunction | None = None
        self._requests: dict[str, str] = {}

    # --- the site function -------------------------------------------------------------

    def site_function(self, federation: Federation) -> SiteFunction:
        """The generated function every site runs (built once per job).

        Parameters
        ----------
        federation : Federation
            Only its label map is read (the number of classes is part of the configuration).

        Returns
        -------
        SiteFunction
            The job template rendered with the model and the job's settings, imported.

        Examples
        --------
        >>> from types import SimpleNamespace
        >>> from researcher.models import SmallCNN
        >>> job = FedAvgJob(SmallCNN, name="demo", rounds=2)
        >>> job.site_function(SimpleNamespace(label_map={"cat": 0, "dog": 1})).name
        'fedimg_demo_...'
        """
        if self._function is None:
            config = {**asdict(self.config), "num_classes": len(federation.label_map)}
            function_name = f"fedimg_{self.name}_{_config_digest(config, self.name)}"
            self._function = build_site_function(function_name, self.model_class, config)
        return self._function

    def initial_weights(self) -> dict[str, np.ndarray]:
        """The model's initial weights (seeded with ``seed``), as NumPy arrays."""
        torch.manual_seed(self.config.seed)
        model = self.model_class(**self.config.model_kwargs)
        return state_dict_to_numpy(model.state_dict())

    @property
    def max_calls(self) -> int:
        """Executions a site approves: one per round, the final evaluation, and (secure aggregation) restarts.

        Examples
        --------
        >>> from researcher.models import SmallCNN
        >>> FedAvgJob(SmallCNN, rounds=3).max_calls
        4
        >>> FedAvgJob(SmallCNN, rounds=3, secure_aggregation=True, max_restarts=2).max_calls
        6
        """
        restarts = self.config.max_restarts if self.config.secure_aggregation else 0
        return self.config.rounds + 1 + restarts

    # --- before submission ---------------------------------------------------------------

    def dry_run(self, federation: Federation, *, privacy: dict | None = None) -> dict[str, dict]:
        """Run the exact site function locally on every site's mocks: a training call, the final evaluation.

        Parameters
        ----------
        federation : Federation
            The sites whose mocks are used (nothing is sent to them).
        privacy : dict, optional
            E.g. ``{"noise_multiplier": 1.0, "max_grad_norm": 1.0}``: the training call goes through
            the DP-SGD loop a site with ``[privacy] mechanism = "dp-sgd"`` uses (sample rate and steps
            derived from the job as the site derives them; the site chooses the noise): a check that
            the model trains per sample.

        Returns
        -------
        dict of str to dict
            Per site: ``train_loss`` (None under DP-SGD), ``val_accuracy`` and ``num_samples``.

        Raises
        ------
        JobError
            When the function fails on a site's mocks or returns weights of other shapes.
        ValueError
            When ``privacy`` has other keys than ``noise_multiplier`` and ``max_grad_norm``.

        Examples
        --------
        >>> job.dry_run(federation)  # doctest: +SKIP
        {'hospital_a': {'train_loss': 2.29, 'val_accuracy': 0.12, 'num_samples': 240}, ...}
        """
        function = self.site_function(federation).function
        weights = self.initial_weights()
        if privacy is not None:
            self._dp_sgd_settings(privacy, 1)  # wrong keys: a ValueError now, not a failure on the mocks
        return {
            name: self._dry_run_site(federation, name, function, weights, privacy)
            for name in federation.names
        }

    def _dry_run_site(
        self,
        federation: Federation,
        name: str,
        function: Any,
        weights: dict[str, np.ndarray],
        privacy: dict | None,
    ) -> dict:
        train_images, train_labels = federation.mock_arrays(name, "train")
        val_images, val_labels = federation.mock_arrays(name, "val")
        splits = (train_images, train_labels, val_images, val_labels)
        try:
            settings = None if privacy is None else self._dp_sgd_settings(privacy, len(train_labels))
            trained = function(*splits, weights, 0, privacy=settings)
            final = function(*splits, trained["weights"], self.config.rounds)
        except Exception as exc:
            raise JobError(f"dry run on {name}'s mock data failed: {type(exc).__name__}: {exc}") from exc
        if _shapes(trained["weights"]) != _shapes(weights):
            raise JobError(f"dry run on {name}: the site returned weights of other shapes than the model's")
        # DP-SGD measures no training figure
        train_loss = None if privacy is not None else trained["train"]["loss"]
        return {
            "train_loss": train_loss,
            "val_accuracy": final["val"]["accuracy"],
            "num_samples": trained["num_samples"],
        }

    def _dp_sgd_settings(self, privacy: dict, num_train: int) -> dict:
        unknown = sorted(set(privacy) - {"noise_multiplier", "max_grad_norm"})
        if unknown:
            raise ValueError(f"dry_run(privacy=...) takes noise_multiplier and max_grad_norm (got {unknown})")
        sample_rate, steps = schedule(num_train, self.config.batch_size, self.config.local_epochs)
        return {
            "noise_multiplier": 1.0,
            "max_grad_norm": 1.0,
            **privacy,
            "sample_rate": sample_rate,
            "steps": steps,
        }

    # --- submission and approval ------------------------------------------------------

    def submit(self, federation: Federation, *, reason: str = "") -> dict[str, str]:
        """Submit one code request per site (or reuse this job's earlier one).

        Parameters
        ----------
        federation : Federation
            The sites to ask.
        reason : str, optional
            What the data owners read; the site code's sha256 is appended, then the job's ``purpose``
            (``policies.reason_with_purpose``: the site reads it back exactly).

        Returns
        -------
        dict of str to str
            Site name → request id.

        Raises
        ------
        JobError
            When a site does not accept the request.

        Examples
        --------
        >>> job.submit(federation, reason="digits CNN, 5 rounds")  # doctest: +SKIP
        {'hospital_a': '7f3c...', 'hospital_b': '01ab...'}
        """
        site_function = self.site_function(federation)
        text = reason or f"fedimg FedAvg job '{self.name}': {self.config.rounds} rounds (+1 final evaluation)"
        for name, site in federation.sites.items():
            decorator = self._syft_function_decorator(site)
            existing = self._existing_request(site, site_function.name)
            if existing is not None:  # submitted before (e.g. by a notebook that restarted): reuse it
                warnings.warn(
                    f"site {name}: job {self.name!r} was submitted before; reusing its request {existing} "
                    "(its approved runs may be spent: give a new job a new name)",
                    stacklevel=2,
                )
                self._requests[name] = existing
                continue
            with _quiet_output():
                submission = decorator(site_function.function)
                reason_text = reason_with_purpose(
                    f"{text}; site code sha256 {site_function.sha256}", self.purpose
                )
                request = site.client.code.request_code_execution(submission, reason=reason_text)
            if not hasattr(request, "id"):
                raise JobError(f"site {name}: the request was not accepted: {request}")
            self._requests[name] = str(request.id)
        return dict(self._requests)

    def _syft_function_decorator(self, site: Any) -> Any:
        """PySyft's decorator for this site: its four assets matched, the rest researcher inputs."""
        import syft as sy
        from syft.service.policy.policy import OutputPolicyExecuteCount

        assets = {asset: site.asset(asset) for asset in ASSETS}
        input_policy = sy.MixedInputPolicy(**assets, weights=dict, rnd=int, cohort=dict, client=site.client)
        output_policy = OutputPolicyExecuteCount(limit=self.max_calls)
        return sy.syft_function(input_policy=input_policy, output_policy=output_policy)

    @staticmethod
    def _existing_request(site: Any, function_name: str) -> str | None:
        for request in site.client.requests:
            code = getattr(request, "code", None)
            if code is not None and getattr(code, "service_func_name", None) == function_name:
                return str(request.id)
        return None

    def approval_status(self, federation: Federation) -> dict[str, tuple[str, str]]:
        """Where this job's requests stand at every site.

        Returns
        -------
        dict of str to (str, str)
            Site name → ``(PENDING|APPROVED|REJECTED|MISSING, deny reason)``.
        """
        result = {}
        for name, request_id in self._requests.items():
            site = federation.sites[name]
            request = next((r for r in site.client.requests if str(r.id) == request_id), None)
            if request is None:
                result[name] = ("MISSING", "")
                continue
            status = request.status.name
            reason = request.deny_reason if status == "REJECTED" else ""
            result[name] = (status, reason if isinstance(reason, str) else "")
        return result

    def wait_for_approval(
        self,
        federation: Federation,
        *,
        timeout: float | None = None,
        poll_seconds: float = 2.0,
        show: bool = True,
    ) -> list[str]:
        """Block until every site decided (or ``timeout``); return the approving sites.

        Parameters
        ----------
        federation : Federation
            The sites asked.
        timeout : float, optional
            Seconds to wait at most (forever when None).
        poll_seconds : float, default 2.0
            How often the sites are asked.
        show : bool, default True
            Leave the live status table on screen.

        Returns
        -------
        list of str
            The sites that approved.

        Raises
        ------
        JobError
            When fewer than ``min_sites`` approved; the message gives the owners' reasons.
        """
        from rich.console import Console
        from rich.live import Live
        from rich.table import Table

        deadline = None if timeout is None else time.monotonic() + timeout
        console = Console()

        def table(statuses: dict) -> Table:
            view = Table(title=f"approval of job {self.name}")
            for column in ("site", "status", "reason"):
                view.add_column(column)
            for name, (status, reason) in statuses.items():
                view.add_row(name, status, reason)
            return view

        def undecided(statuses: dict) -> bool:
            pending = any(s == "PENDING" for s, _ in statuses.values())
            return pending and (deadline is None or time.monotonic() < deadline)

        statuses = self.approval_status(federation)
        with Live(table(statuses), console=console, refresh_per_second=2, transient=not show) as live:
            while undecided(statuses):
                time.sleep(poll_seconds)
                statuses = self.approval_status(federation)
                live.update(table(statuses))
        console.print()
        approved = [name for name, (status, _) in statuses.items() if status == "APPROVED"]
        if len(approved) < self.config.min_sites:
            denied = {name: reason for name, (status, reason) in statuses.items() if status == "REJECTED"}
            raise JobError(
                f"only {len(approved)} site(s) approved ({approved}); "
                f"the job needs {self.config.min_sites}. Denied: {denied}"
            )
        return approved

    # --- training -------------------------------------------------------------------

    def run(
        self, federation: Federation, checkpoint_dir: str | Path, *, sites: list[str] | None = None
    ) -> TrainingResult:
        """Run the remaining rounds (resuming from ``checkpoint_dir``) and return the result.

        Parameters
        ----------
        federation : Federation
            The sites.
        checkpoint_dir : str or Path
            Where the job's state is kept after every round; a job resumes from it.
        sites : list of str, optional
            The sites to call (default: those this job submitted to, else every site).

        Returns
        -------
        TrainingResult
            The final global model and the per-round history.

        Raises
        ------
        JobError
            When fewer than ``min_sites`` sites answer a round (resume later from the checkpoint), or
            the checkpoint belongs to another job.

        Examples
        --------
        >>> result = job.run(federation, checkpoint_dir="runs/cnn")  # doctest: +SKIP
        >>> result.table()  # doctest: +SKIP
        """
        site_function = self.site_function(federation)
        checkpoint = Checkpoint.open(Path(checkpoint_dir), site_function.sha256, self.initial_weights())
        active = list(sites or list(self._requests) or federation.names)
        self._sync_calls(federation, site_function.name, active, checkpoint)
        momentum = self._server_momentum(checkpoint)
        while checkpoint.next_round <= self.config.rounds:
            self._run_round(federation, site_function.name, active, checkpoint, momentum, checkpoint_dir)
        return TrainingResult(
            checkpoint.weights,
            self.model_source(),
            self.model_class.__name__,
            asdict(self.config),
            checkpoint.history,
        )

    def _server_momentum(self, checkpoint: Checkpoint) -> ServerMomentum | None:
        """FedAvgM's server state, resumed from the checkpoint; None for plain FedAvg."""
        if not self.config.server_momentum > 0:
            return None
        momentum = ServerMomentum(self.config.server_momentum, self.config.server_lr)
        momentum.velocity = checkpoint.velocity
        return momentum

    def _run_round(
        self,
        federation: Federation,
        function_name: str,
        active: list[str],
        checkpoint: Checkpoint,
        momentum: ServerMomentum | None,
        checkpoint_dir: Any,
    ) -> None:
        """One round, saved to the checkpoint.

        Outputs of sites that answered an earlier, failed attempt of this round are reused, not
        re-requested.
        """
        started = time.perf_counter()
        round_number = checkpoint.next_round
        earlier = checkpoint.pending
        masked = self.config.secure_aggregation and round_number < self.config.rounds
        to_call = [name for name in active if name not in earlier and self._has_calls_left(checkpoint, name)]
        outcomes = self._call_cohort(federation, function_name, to_call, checkpoint, masked)
        answered = {**earlier, **_answers(outcomes)}
        record = RoundRecord(
            round=round_number,
            sites={name: _site_entry(out) for name, out in {**outcomes, **earlier}.items()},
        )
        record.evaluation = aggregate_evaluations([out["val"] for out in answered.values()])
        if len(answered) < self.config.min_sites:
            # a masked update is useless outside its cohort: only plain answers wait for the resume
            checkpoint.pending = {} if masked else answered
            checkpoint.save()
            errors = {name: out["error"] for name, out in outcomes.items() if "error" in out}
            raise JobError(
                f"round {round_number}: only {len(answered)} site(s) answered, "
                f"the job needs {self.config.min_sites}; errors: {errors}. "
                f"Resume later from {checkpoint_dir}."
            )
        if round_number < self.config.rounds:
            outputs = list(answered.values())
            averaged = secure_average(checkpoint.weights, outputs) if masked else fedavg(_updates(outputs))
            checkpoint.weights = momentum.step(checkpoint.weights, averaged) if momentum else averaged
            record.train = _training_summary(outputs)
        if momentum is not None:
            checkpoint.velocity = momentum.velocity
        checkpoint.close_round(record)
        report_round(record, self.config.rounds, time.perf_counter() - started)

    def _sync_calls(
        self, federation: Federation, function_name: str, names: list[str], checkpoint: Checkpoint
    ) -> None:
        """Each site's count of this job's runs, as the site knows it: its released runs plus the failures it
        answered (a site that cannot be asked keeps the checkpoint's count)."""
        for name in names:
            released = site_runs(federation.sites[name].client, function_name)
            if released is not None:
                checkpoint.calls[name] = released + checkpoint.failed.get(name, 0)

    def _has_calls_left(self, checkpoint: Checkpoint, name: str) -> bool:
        """Whether site ``name`` has approved executions left (counted across resumes)."""
        return checkpoint.calls.get(name, 0) < self.max_calls

    def _call_cohort(
        self,
        federation: Federation,
        function_name: str,
        to_call: list[str],
        checkpoint: Checkpoint,
        masked: bool,
    ) -> dict[str, dict]:
        """Call ``to_call`` with the checkpoint's weights and count the calls; a masked round may restart.

        Masks cancel only over the whole cohort: after a dropout the round restarts with the
        survivors (at most ``max_restarts`` times, while ``min_sites`` survive). When the last cohort
        called is still incomplete, its answers are dropped.
        """
        restarts = self.config.max_restarts if masked else 0
        while True:
            cohort = _public_keys(federation, to_call) if masked else {}
            outcomes = self._call_sites(
                federation, function_name, to_call, checkpoint.weights, checkpoint.next_round, cohort
            )
            _count_calls(checkpoint.calls, outcomes, checkpoint.failed)
            survivors = list(_answers(outcomes))
            complete = len(survivors) == len(to_call)
            if not masked or complete or restarts == 0 or len(survivors) < self.config.min_sites:
                break
            restarts -= 1
            to_call = [name for name in survivors if self._has_calls_left(checkpoint, name)]
        if masked and not complete:
            return _drop_answers(outcomes)
        return outcomes

    def model_source(self) -> str:
        """The model class's source as it ships to the sites."""
        return getattr(self.model_class, "__fedimg_source__", None) or model_source(self.model_class)

    def _call_sites(
        self,
        federation: Federation,
        function_name: str,
        names: list[str],
        weights: dict,
        round_number: int,
        cohort: dict | None = None,
    ) -> dict[str, dict]:
        def call(name: str) -> dict:
            site = federation.sites[name]
            started = time.perf_counter()
            try:
                function = getattr(site.client.code, function_name)
                assets = {asset: site.asset(asset) for asset in ASSETS}
                # (no stdout redirection here: it is process-wide and these calls run in threads)
                output = function(**assets, weights=weights, rnd=round_number, cohort=cohort or {}).get()
                if not isinstance(output, dict) or "val" not in output:
                    return {"error": f"unexpected output {type(output).__name__}: {str(output)[:200]}"}
            except Exception as exc:  # a site that is down or refuses: recorded, the job goes on
                return {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "unreached": _unreached(exc)}
            output["seconds"] = time.perf_counter() - started
            return output

        if not names:
            return {}
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            return dict(zip(names, pool.map(call, names), strict=True))


def _model_class(model: type | None, source: str | None, name: str | None) -> type:
    """The job's model class: ``model`` itself, or the class ``name`` loaded from ``source``."""
    if model is not None and source is None:
        return model
    if model is None and source is not None:
        if not name:
            raise ValueError("model_source needs model_name: the class to instantiate")
        loaded: Any = load_model_class(source, name)
        loaded.__fedimg_source__ = source  # inspect cannot find the source of an exec'd class
        return loaded
    raise ValueError(
        "give the model as a class (model=Net) or as source text (model_source=..., model_name='Net')"
    )


def _config_digest(config: dict, job_name: str) -> str:
    """10 hex digits that tell jobs apart in the site function's name."""
    text = json.dumps(config, sort_keys=True).encode() + job_name.encode()
    return hashlib.sha256(text).hexdigest()[:10]


def _shapes(weights: dict) -> dict[str, tuple[int, ...]]:
    return {name: np.shape(value) for name, value in weights.items()}


def _public_keys(federation: Federation, names: list[str]) -> dict[str, str]:
    """The secure-aggregation cohort: each site's public key, from its dataset description."""
    return {name: federation.sites[name].info["secure_aggregation_public_key"] for name in names}


def _count_calls(calls: dict[str, int], outcomes: dict[str, dict], failed: dict[str, int]) -> None:
    for name, output in outcomes.items():
        if not output.get("unreached"):  # the site may have executed it: it counts against the approved limit
            calls[name] = calls.get(name, 0) + 1
            if "error" in output:  # an answered failure: the site counted it, its output history does not
                failed[name] = failed.get(name, 0) + 1


def site_runs(client: Any, function_name: str) -> int | None:
    """How many runs of the researcher's code ``function_name`` released a result at a site.

    Read from PySyft's output history of the code a call of ``function_name`` runs
    (what the site stored for each released run; a researcher may read the history
    of their own code). Only that code counts: an earlier request of the same name
    (another job's, or one made outside fedimg) has runs of its own. A run the
    site's crash cut short released nothing and is refunded by the site when it starts again.

    Parameters
    ----------
    client : syft DatasiteClient
        The researcher's client of the site.
    function_name : str
        The job's site function (``SiteFunction.name``).

    Returns
    -------
    int or None
        The number of released runs; None when the site cannot be asked (down, or the call failed).

    Examples
    --------
    >>> site_runs(None, "fedavg_job") is None  # no client: the site cannot be asked
    True
    """
    try:
        with _quiet_output():
            # the code PySyft calls by this name (the newest of that name), as _call_sites calls it
            code_id = getattr(client.code, function_name).user_code_id
            return len(client.api.services.output.get_by_user_code_id(code_id))
    except Exception:  # noqa: BLE001 - a site that cannot say keeps the checkpoint's own count
        return None


def _answers(outcomes: dict[str, dict]) -> dict[str, dict]:
    """The sites' outputs that are answers (not errors)."""
    return {name: output for name, output in outcomes.items() if "error" not in output}


def _drop_answers(outcomes: dict[str, dict]) -> dict[str, dict]:
    """Every answer replaced by an error: an incomplete cohort's masked updates cannot be decoded."""
    return {name: out if "error" in out else {"error": INCOMPLETE_COHORT} for name, out in outcomes.items()}


def _updates(outputs: Sequence[dict]) -> list[tuple[dict, int]]:
    """``(weights, num_samples)`` per answer: what ``fedavg`` averages."""
    return [(output["weights"], output["num_samples"]) for output in outputs]


def _training_summary(outputs: Sequence[dict]) -> dict:
    """The round's train loss (sample-weighted over the sites that measured it) and samples trained on.

    DP-SGD sites measure no training figure: their samples count, their loss does not.
    """
    total = sum(output["num_samples"] for output in outputs)
    measured = [output for output in outputs if not _dp_sgd(output)]
    count = sum(output["num_samples"] for output in measured)
    if not count:
        return {"loss": None, "num_samples": total}
    loss_sum = sum(output["train"]["loss"] * output["num_samples"] for output in measured)
    return {"loss": loss_sum / count, "num_samples": total}


@contextlib.contextmanager
def _quiet_output() -> Iterator[None]:
    """Silence PySyft's success banners: on stdout, and through IPython's display in notebooks."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            from IPython.utils.capture import capture_output
        except ImportError:
            yield
            return
        with capture_output():
            yield


def _unreached(exc: BaseException) -> bool:
    """True when the call cannot have reached the site (connection refused, DNS, timeout before sending)."""
    import requests  # type: ignore[import-untyped]  # PySyft's HTTP client; its stubs are not installed

    current: BaseException | None = exc
    while current is not None:
        refused = isinstance(current, (requests.exceptions.ConnectionError, ConnectionError))
        if refused and "500" not in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _site_entry(output: dict) -> dict:
    if "error" in output:
        return {"status": "error", "error": output["error"]}
    entry = {
        "status": "ok",
        "seconds": round(output.get("seconds", 0.0), 3),
        "val": {k: v for k, v in output["val"].items() if k != "confusion"},
    }
    if "train" in output:
        if not _dp_sgd(output):
            entry["train"] = output["train"]
        entry["num_samples"] = output["num_samples"]
    if "privacy" in output:
        entry["privacy"] = output["privacy"]  # the site's epsilon spent so far for this researcher
    if "device" in output:
        entry["device"] = output["device"]  # where the site trained: cpu, or cuda when its policy allows
    return entry


def _dp_sgd(output: dict) -> bool:
    """The site trained with its DP-SGD: its train figures are placeholders, not measurements."""
    return isinstance(output.get("privacy"), dict) and output["privacy"].get("mechanism") == "dp-sgd"


def secure_average(global_weights: dict[str, np.ndarray], outputs: list[dict]) -> dict[str, np.ndarray]:
    """FedAvg from masked, sample-weighted updates: only their sum is ever decoded.

    Parameters
    ----------
    global_weights : dict of str to ndarray
        The round's global weights (their dtypes; the entries no site released stay as they are).
    outputs : list of dict
        The whole cohort's answers: masked ``weights`` (sample-weighted) and ``num_samples``.

    Returns
    -------
    dict of str to ndarray
        The sample-weighted average, in the global weights' dtypes.
    """
    total = unmask_sum([out["weights"] for out in outputs])
    count = sum(out["num_samples"] for out in outputs)
    return {
        name: (total[name] / count).astype(value.dtype) if name in total else value
        for name, value in global_weights.items()
    }


@dataclass
class Checkpoint:
    """Where a job stands, on disk: resumable after a crash or a site outage."""

    folder: Path
    site_code_sha256: str
    weights: dict[str, np.ndarray]
    next_round: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    # per site, the calls it answered with an error (counted by the site, absent from its output history)
    failed: dict[str, int] = field(default_factory=dict)
    history: list[RoundRecord] = field(default_factory=list)
    velocity: dict[str, np.ndarray] = field(default_factory=dict)
    # outputs of sites that answered the unfinished round
    pending: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def open(cls, folder: Path, site_code_sha256: str, initial_weights: dict[str, np.ndarray]) -> Checkpoint:
        """The job's checkpoint in ``folder``, or a fresh one at round 0 from ``initial_weights``."""
        state = folder / "checkpoint.json"
        if not state.exists():
            return cls(folder, site_code_sha256, initial_weights)
        document = json.loads(state.read_text())
        if document["site_code_sha256"] != site_code_sha256:
            raise JobError(
                f"{folder}: checkpoint of another job (site code differs); use a new checkpoint_dir"
            )
        with np.load(folder / "global_weights.npz") as archive:
            weights = {name: archive[name] for name in initial_weights}
        velocity = _load_npz(folder / "velocity.npz") if (folder / "velocity.npz").exists() else {}
        history = [RoundRecord.from_json(item) for item in document["history"]]
        pending = {
            name: _pending_output(folder, name, output)
            for name, output in document.get("pending", {}).items()
        }
        return cls(
            folder,
            site_code_sha256,
            weights,
            document["next_round"],
            document["calls"],
            document.get("failed", {}),
            history,
            velocity,
            pending,
        )

    def close_round(self, record: RoundRecord) -> None:
        """Record a finished round, move on to the next one, and save."""
        self.history.append(record)
        self.pending = {}
        self.next_round = record.round + 1
        self.save()

    def save(self) -> None:
        """Write the checkpoint (weights and pending outputs as ``.npz``, the rest as JSON)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        _save_npz(self.folder / "global_weights.npz", self.weights)
        if self.velocity:
            _save_npz(self.folder / "velocity.npz", self.velocity)
        document = {
            "site_code_sha256": self.site_code_sha256,
            "next_round": self.next_round,
            "calls": self.calls,
            "failed": self.failed,
            "history": [record.to_json() for record in self.history],
            "pending": {name: _json_output(output) for name, output in self.pending.items()},
        }
        for name, output in self.pending.items():
            if "weights" in output:
                _save_npz(self.folder / f"pending-{name}.npz", output["weights"])
        temporary = self.folder / "checkpoint.json.tmp"
        temporary.write_text(json.dumps(document, indent=1))
        temporary.replace(self.folder / "checkpoint.json")


def _pending_output(folder: Path, name: str, output: dict) -> dict:
    """A pending output as ``_json_output`` wrote it, with its weights and confusion matrix as arrays."""
    weights_path = folder / f"pending-{name}.npz"
    if weights_path.exists():
        output["weights"] = _load_npz(weights_path)
    output["val"]["confusion"] = np.asarray(output["val"]["confusion"])
    return output


def _json_output(output: dict) -> dict:
    document = {key: value for key, value in output.items() if key != "weights"}
    document["val"] = {**output["val"], "confusion": np.asarray(output["val"]["confusion"]).tolist()}
    return document


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    temporary = path.with_suffix(".tmp.npz")
    np.savez(temporary, **arrays)
    temporary.replace(path)
