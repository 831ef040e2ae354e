"""One private run of approved code, as the enforcement chain sees it: plain data, no PySyft objects.

The site describes the call (``Execution``); the steps read that description and
fill in what they decide (the run number, the DP-SGD settings, the privacy charge,
the result, the release record).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from policies.template import match_template

MOCK_RESULT = "not computed: fedimg runs approved code on the private data only (run it on the mocks locally)"


@dataclass(frozen=True)
class RunOutput:
    """What one run of the code on the private data gave back.

    Parameters
    ----------
    result : Any
        The function's return value.
    errored : bool
        Whether the code raised.
    stderr : str
        Its standard error (for the owner's log; never shown to the researcher).

    Examples
    --------
    >>> RunOutput({"round": 0}).errored
    False
    """

    result: Any
    errored: bool = False
    stderr: str = ""


Runner = Callable[[dict[str, Any]], RunOutput]
"""Runs the code on the given keyword arguments (the site's PySyft glue hands one in)."""


@dataclass
class Execution:
    """One call of approved code on a site's private data, described for the enforcement chain.

    Parameters
    ----------
    code_id : str
        The approved code's id at this site.
    function : str
        The function's name (shared by every site of a job).
    raw_code : str
        The function's source, as approved.
    researcher : str
        Who called it (their verify key).
    limit : int
        How many runs the owner approved.
    kwargs : dict
        The call's arguments (private data included).
    researcher_output_policy : bool
        Whether the code's output policy is researcher-written.
    researcher_input_policy : bool
        Whether its input policy is researcher-written.

    Attributes
    ----------
    run : int or None
        Which approved run this is (1-based), once counted.
    run_id : str or None
        The run's id in the audit log, once its ``started`` record is written; every record
        that ends the run (release, refusal, failed execution, aborted) carries it.
    dp_sgd : dict or None
        The DP-SGD settings the call trains with, at a ``mechanism = "dp-sgd"`` site.
    privacy : dict or None
        The privacy charge (mechanism, ε spent, noise multiplier, ...), once charged.
    result : Any
        The code's result, once run (the later steps may edit it).
    errored : bool
        Whether the run failed: nothing is released.
    release : dict
        What the steps add to the audit's release record.

    Examples
    --------
    >>> call = Execution("c1", "train_job", "def train_job(rnd): ...", "alice", 2, {"rnd": 0})
    >>> call.run is None and call.run_id is None and call.privacy is None and call.release == {}
    True
    """

    code_id: str
    function: str
    raw_code: str
    researcher: str
    limit: int
    kwargs: dict[str, Any]
    researcher_output_policy: bool = False
    researcher_input_policy: bool = False
    run: int | None = None
    run_id: str | None = None
    dp_sgd: dict[str, Any] | None = None
    privacy: dict[str, Any] | None = None
    result: Any = None
    errored: bool = False
    release: dict[str, Any] = field(default_factory=dict)

    def template_config(self) -> dict | None:
        """The CONFIG of the code if it is fedimg's job template exactly (model aside), else None.

        Returns
        -------
        dict or None
            The job's settings (rounds, batch size, ...), or None for any other code.

        Examples
        --------
        >>> Execution("c1", "f", "def f(x):\\n    return x\\n", "alice", 1, {}).template_config() is None
        True
        """
        return _template_config(self.raw_code)

    def is_template_evaluation(self) -> bool:
        """Whether this is the job template's evaluation-only call (``rnd >= CONFIG["rounds"]``).

        Only a plain integer ``rnd`` and ``rounds`` count: anything else may train.

        Returns
        -------
        bool
            True when the call cannot return model weights.

        Examples
        --------
        >>> call = Execution("c1", "f", "def f(rnd):\\n    return rnd\\n", "alice", 1, {"rnd": 5})
        >>> call.is_template_evaluation()  # not the job template: any call may train
        False
        """
        config = self.template_config()
        if config is None:
            return False
        rounds, rnd = config.get("rounds"), self.kwargs.get("rnd")
        return is_plain_int(rounds) and is_plain_int(rnd) and rnd >= rounds


def is_plain_int(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is an ``int`` and not a ``bool``.

    Examples
    --------
    >>> is_plain_int(3), is_plain_int(True), is_plain_int(3.0)
    (True, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool)


_templates: dict[str, dict | None] = {}


def _template_config(code: str) -> dict | None:
    """Cached per source: the template comparison re-renders the whole template."""
    key = hashlib.sha256(code.encode()).hexdigest()
    if key not in _templates:
        match = match_template(code)
        _templates[key] = match.config if match.matches else None
    return _templates[key]
