"""A federated training job (FedAvg, optionally FedProx / FedAvgM) across every site of a ``Federation``.

Example (in a notebook)::

    job = FedAvgJob(Net, rounds=5, local_epochs=1, batch_size=32, lr=0.05, min_sites=2)
    job.dry_run(federation)                  # the exact site function, locally on every site's mocks
    job.submit(federation, reason="digits CNN, 5 rounds")
    job.wait_for_approval(federation)        # per-site status; denials with the owner's reason
    result = job.run(federation, checkpoint_dir="runs/cnn")   # resumes from the checkpoint if present
    result.save("runs/cnn")                  # model.pt, history.json, loss/accuracy plots

One code request per site covers the whole job: the private assets are matched,
the global weights and the round number are researcher inputs
(``MixedInputPolicy(weights=dict, rnd=int)``), and the request allows
``rounds + 1`` executions (``rounds`` training calls and a final evaluation).
The job never calls a site more often than that, across resumes too.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policies import schedule, unmask_sum
from researcher.aggregation import ServerMomentum, fedavg
from researcher.federation import ASSETS, Federation
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


@dataclass(frozen=True)
class FedAvgConfig:
    """Hyper-parameters of a job; all of them are shown to the data owners in the site code."""

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
        if (
            isinstance(self.max_restarts, bool)
            or not isinstance(self.max_restarts, int)
            or self.max_restarts < 0
        ):
            raise ValueError(f"max_restarts must be an integer >= 0 (got {self.max_restarts!r})")
        json.dumps(self.model_kwargs)  # must travel as a literal


class JobError(Exception):
    """The job cannot go on (not enough sites approved or answering); the message says which and why."""


class FedAvgJob:
    """Federated averaging of a PyTorch model over the sites of a federation."""

    def __init__(
        self,
        model: type | None = None,
        *,
        model_source: str | None = None,
        model_name: str | None = None,
        name: str = "fedavg",
        **config: Any,
    ) -> None:
        self.config = FedAvgConfig(**config)
        if (model is None) == (model_source is None):
            raise ValueError(
                "give the model as a class (model=Net) or as source text (model_source=..., model_name='Net')"
            )
        if model_source is not None:
            if not model_name:
                raise ValueError("model_source needs model_name: the class to instantiate")
            model = load_model_class(model_source, model_name)
            model.__fedimg_source__ = model_source
        self.model_class = model
        self.name = name
        self._function: SiteFunction | None = None
        self._requests: dict[str, str] = {}

    # --- the site function -------------------------------------------------------------

    def site_function(self, federation: Federation) -> SiteFunction:
        """The generated function every site runs (built once per job)."""
        if self._function is None:
            config = {**asdict(self.config), "num_classes": len(federation.label_map)}
            digest = hashlib.sha256(
                json.dumps(config, sort_keys=True).encode() + self.name.encode()
            ).hexdigest()[:10]
            self._function = build_site_function(f"fedimg_{self.name}_{digest}", self.model_class, config)
        return self._function

    def initial_weights(self) -> dict[str, np.ndarray]:
        import torch

        torch.manual_seed(self.config.seed)
        return state_dict_to_numpy(self.model_class(**self.config.model_kwargs).state_dict())

    @property
    def max_calls(self) -> int:
        """Executions a site approves: one per round, a final evaluation, and (secure aggregation) restarts."""
        return self.config.rounds + 1 + (self.config.max_restarts if self.config.secure_aggregation else 0)

    # --- before submission ---------------------------------------------------------------

    def dry_run(self, federation: Federation, *, privacy: dict | None = None) -> dict[str, dict]:
        """Run the exact site function locally on every site's mock data (a training call and the final evaluation).

        ``privacy``, e.g. ``{"noise_multiplier": 1.0, "max_grad_norm": 1.0}``, runs the training call through
        the DP-SGD loop a site with ``[privacy] mechanism = "dp-sgd"`` uses (sample rate and steps derived from
        the job as the site derives them; the site chooses the noise): a check that the model trains per sample.
        """
        function = self.site_function(federation).function
        weights = self.initial_weights()
        if privacy is not None:
            self._dp_sgd_settings(privacy, 1)  # wrong keys: a ValueError now, not a failure on the mocks
        report = {}
        for name in federation.names:
            train_images, train_labels = federation.mock_arrays(name, "train")
            val_images, val_labels = federation.mock_arrays(name, "val")
            try:
                settings = None if privacy is None else self._dp_sgd_settings(privacy, len(train_labels))
                trained = function(
                    train_images, train_labels, val_images, val_labels, weights, 0, privacy=settings
                )
                final = function(
                    train_images, train_labels, val_images, val_labels, trained["weights"], self.config.rounds
                )
            except Exception as exc:
                raise JobError(f"dry run on {name}'s mock data failed: {type(exc).__name__}: {exc}") from exc
            shapes = {k: np.shape(v) for k, v in trained["weights"].items()}
            if shapes != {k: np.shape(v) for k, v in weights.items()}:
                raise JobError(
                    f"dry run on {name}: the site returned weights of other shapes than the model's"
                )
            train_loss = (
                None if privacy is not None else trained["train"]["loss"]
            )  # DP-SGD measures no training figure
            report[name] = {
                "train_loss": train_loss,
                "val_accuracy": final["val"]["accuracy"],
                "num_samples": trained["num_samples"],
            }
        return report

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
        """One code request per site; returns ``{site: request id}``."""
        import syft as sy
        from syft.service.policy.policy import OutputPolicyExecuteCount

        site_function = self.site_function(federation)
        text = reason or f"fedimg FedAvg job '{self.name}': {self.config.rounds} rounds (+1 final evaluation)"
        for name, site in federation.sites.items():
            assets = {asset: site.asset(asset) for asset in ASSETS}
            decorator = sy.syft_function(
                input_policy=sy.MixedInputPolicy(
                    **assets, weights=dict, rnd=int, cohort=dict, client=site.client
                ),
                output_policy=OutputPolicyExecuteCount(limit=self.max_calls),
            )
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
                request = site.client.code.request_code_execution(
                    submission, reason=f"{text}; site code sha256 {site_function.sha256}"
                )
            if not hasattr(request, "id"):
                raise JobError(f"site {name}: the request was not accepted: {request}")
            self._requests[name] = str(request.id)
        return dict(self._requests)

    @staticmethod
    def _existing_request(site: Any, function_name: str) -> str | None:
        for request in site.client.requests:
            code = getattr(request, "code", None)
            if code is not None and getattr(code, "service_func_name", None) == function_name:
                return str(request.id)
        return None

    def approval_status(self, federation: Federation) -> dict[str, tuple[str, str]]:
        """``{site: (PENDING|APPROVED|REJECTED, deny reason)}`` for this job's requests."""
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

        Raises ``JobError`` when fewer than ``min_sites`` approved.
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

        statuses = self.approval_status(federation)
        with Live(table(statuses), console=console, refresh_per_second=2, transient=not show) as live:
            while any(s == "PENDING" for s, _ in statuses.values()) and (
                deadline is None or time.monotonic() < deadline
            ):
                time.sleep(poll_seconds)
                statuses = self.approval_status(federation)
                live.update(table(statuses))
        console.print()
        approved = [name for name, (status, _) in statuses.items() if status == "APPROVED"]
        if len(approved) < self.config.min_sites:
            denied = {name: reason for name, (status, reason) in statuses.items() if status == "REJECTED"}
            raise JobError(
                f"only {len(approved)} site(s) approved ({approved}); the job needs {self.config.min_sites}. Denied: {denied}"
            )
        return approved

    # --- training -------------------------------------------------------------------

    def run(
        self, federation: Federation, checkpoint_dir: str | Path, *, sites: list[str] | None = None
    ) -> TrainingResult:
        """Run the remaining rounds (resuming from ``checkpoint_dir``) and return the result."""
        site_function = self.site_function(federation)
        checkpoint = Checkpoint.open(Path(checkpoint_dir), site_function.sha256, self.initial_weights())
        active = [name for name in (sites or list(self._requests) or federation.names)]
        momentum = (
            ServerMomentum(self.config.server_momentum, self.config.server_lr)
            if self.config.server_momentum > 0
            else None
        )
        if momentum is not None:
            momentum.velocity = checkpoint.velocity
        while checkpoint.next_round <= self.config.rounds:
            self._run_round(federation, site_function.name, active, checkpoint, momentum, checkpoint_dir)
        return TrainingResult(
            checkpoint.weights,
            self.model_source(),
            self.model_class.__name__,
            asdict(self.config),
            checkpoint.history,
        )

    def _run_round(
        self,
        federation: Federation,
        function_name: str,
        active: list[str],
        checkpoint: Checkpoint,
        momentum: ServerMomentum | None,
        checkpoint_dir: Any,
    ) -> None:
        """One round; outputs of sites that answered an earlier, failed attempt of this round are reused, not re-requested."""
        round_number = checkpoint.next_round
        earlier = checkpoint.pending
        to_call = [s for s in active if s not in earlier and checkpoint.calls.get(s, 0) < self.max_calls]
        masked = self.config.secure_aggregation and round_number < self.config.rounds
        restarts = self.config.max_restarts if masked else 0
        while True:
            cohort = (
                {name: federation.sites[name].info["secure_aggregation_public_key"] for name in to_call}
                if masked
                else {}
            )
            outcomes = self._call_sites(
                federation, function_name, to_call, checkpoint.weights, round_number, cohort
            )
            for name, output in outcomes.items():
                if not output.get(
                    "unreached"
                ):  # the site may have executed it: it counts against the approved limit
                    checkpoint.calls[name] = checkpoint.calls.get(name, 0) + 1
            survivors = [name for name, out in outcomes.items() if "error" not in out]
            # masks cancel only over the whole cohort: a dropout restarts the round with the survivors
            if (
                not masked
                or len(survivors) == len(to_call)
                or restarts == 0
                or len(survivors) < self.config.min_sites
            ):
                break
            restarts -= 1
            to_call = [name for name in survivors if checkpoint.calls.get(name, 0) < self.max_calls]
        if masked and len(survivors) != len(to_call):
            outcomes = {
                name: (
                    out
                    if "error" in out
                    else {"error": "dropped: the cohort was incomplete, masks do not cancel"}
                )
                for name, out in outcomes.items()
            }
        answered = {**earlier, **{name: out for name, out in outcomes.items() if "error" not in out}}
        record = RoundRecord(
            round=round_number,
            sites={name: _site_entry(out) for name, out in {**outcomes, **earlier}.items()},
        )
        record.evaluation = aggregate_evaluations([out["val"] for out in answered.values()])
        if len(answered) < self.config.min_sites:
            checkpoint.pending = {} if masked else answered
            checkpoint.save()
            errors = {n: o["error"] for n, o in outcomes.items() if "error" in o}
            raise JobError(
                f"round {round_number}: only {len(answered)} site(s) answered, the job needs {self.config.min_sites}; "
                f"errors: {errors}. Resume later from {checkpoint_dir}."
            )
        if round_number < self.config.rounds:
            averaged = (
                secure_average(checkpoint.weights, list(answered.values()))
                if masked
                else fedavg([(out["weights"], out["num_samples"]) for out in answered.values()])
            )
            checkpoint.weights = momentum.step(checkpoint.weights, averaged) if momentum else averaged
            total = sum(o["num_samples"] for o in answered.values())
            measured = [
                o for o in answered.values() if not _dp_sgd(o)
            ]  # DP-SGD sites measure no training figure
            count = sum(o["num_samples"] for o in measured)
            record.train = {
                "loss": sum(o["train"]["loss"] * o["num_samples"] for o in measured) / count
                if count
                else None,
                "num_samples": total,
            }
        if momentum is not None:
            checkpoint.velocity = momentum.velocity
        checkpoint.history.append(record)
        checkpoint.pending = {}
        checkpoint.next_round = round_number + 1
        checkpoint.save()

    def model_source(self) -> str:
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
            return dict(zip(names, pool.map(call, names)))


@contextlib.contextmanager
def _quiet_output():
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
    import requests

    while exc is not None:
        if isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError)) and "500" not in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
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
    return entry


def _dp_sgd(output: dict) -> bool:
    """The site trained with its DP-SGD: its train figures are placeholders, not measurements."""
    return isinstance(output.get("privacy"), dict) and output["privacy"].get("mechanism") == "dp-sgd"


def secure_average(global_weights: dict[str, np.ndarray], outputs: list[dict]) -> dict[str, np.ndarray]:
    """FedAvg from masked, sample-weighted updates: only their sum is ever decoded."""
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
    history: list[RoundRecord] = field(default_factory=list)
    velocity: dict[str, np.ndarray] = field(default_factory=dict)
    pending: dict[str, dict] = field(
        default_factory=dict
    )  # outputs of sites that answered the unfinished round

    @classmethod
    def open(
        cls, folder: Path, site_code_sha256: str, initial_weights: dict[str, np.ndarray]
    ) -> Checkpoint:
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
        velocity = {}
        if (folder / "velocity.npz").exists():
            with np.load(folder / "velocity.npz") as archive:
                velocity = {name: archive[name] for name in archive.files}
        history = [RoundRecord.from_json(item) for item in document["history"]]
        pending = {}
        for name, output in document.get("pending", {}).items():
            if (folder / f"pending-{name}.npz").exists():
                with np.load(folder / f"pending-{name}.npz") as archive:
                    output["weights"] = {key: archive[key] for key in archive.files}
            output["val"]["confusion"] = np.asarray(output["val"]["confusion"])
            pending[name] = output
        return cls(
            folder,
            site_code_sha256,
            weights,
            document["next_round"],
            document["calls"],
            history,
            velocity,
            pending,
        )

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _save_npz(self.folder / "global_weights.npz", self.weights)
        if self.velocity:
            _save_npz(self.folder / "velocity.npz", self.velocity)
        document = {
            "site_code_sha256": self.site_code_sha256,
            "next_round": self.next_round,
            "calls": self.calls,
            "history": [record.to_json() for record in self.history],
            "pending": {name: _json_output(output) for name, output in self.pending.items()},
        }
        for name, output in self.pending.items():
            if "weights" in output:
                _save_npz(self.folder / f"pending-{name}.npz", output["weights"])
        temporary = self.folder / "checkpoint.json.tmp"
        temporary.write_text(json.dumps(document, indent=1))
        temporary.replace(self.folder / "checkpoint.json")


def _json_output(output: dict) -> dict:
    document = {key: value for key, value in output.items() if key != "weights"}
    document["val"] = {**output["val"], "confusion": np.asarray(output["val"]["confusion"]).tolist()}
    return document


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    temporary = path.with_suffix(".tmp.npz")
    np.savez(temporary, **arrays)
    temporary.replace(path)
