"""Red team, one ordinary site: a researcher tries to get private images and labels out; review or release stops it.

Each attempt is a real code request to a real datasite. The owner reviews it with the real checks and decides
with ``fedimg review``. Attempts that reach the server's internals, files or the network are blocked by the
static review and denied. Attempts that a careless owner could approve (or that are harmless to run on this
machine) are then force-approved and run, and the site's release policy must refuse their output. Every block
leaves an audit entry: the owner's decision, and the site's refusal. See tests/redteam/README.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import syft as sy

from tests.redteam.conftest import (
    RedTeam,
    check,
    failed_checks,
    rules,
    small_job,
    start_sites,
    submit_job,
    tampered_template,
)

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def site(tmp_path_factory, sample_federation):
    (running,) = start_sites(tmp_path_factory, sample_federation, [("main", "client_0", None)])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def team(site) -> RedTeam:
    return RedTeam(site)


@pytest.fixture(scope="module")
def job_parts(team, tmp_path_factory):
    """A legitimate one-round job: its global weights, and a folder for tampered copies of its site function."""
    return small_job(team.federation, "honest").initial_weights(), tmp_path_factory.mktemp("redteam-code")


def blocked_by_review(team: RedTeam, request_id: str, *expected_rules: str) -> object:
    """The static review fails with ``expected_rules``; so does the overall verdict."""
    review = team.review(request_id)
    assert not check(review, "static review"), review.render()
    assert set(expected_rules) <= rules(review), (expected_rules, review.render())
    assert not check(review, "the code is the job template")
    return review


def blocked_then_denied(team: RedTeam, function: object, rules: tuple[str, ...], reason: str) -> None:
    """The static review blocks ``function`` with ``rules`` and the owner denies it with ``reason`` (too dangerous to run)."""
    request = team.submit(function)
    blocked_by_review(team, request, *rules)
    team.deny(request, reason)


def blocked_then_refused(
    team: RedTeam, function: object, rules: tuple[str, ...], match: str, **inputs: object
) -> object:
    """The static review blocks ``function`` with ``rules``; a careless owner force-approves it anyway, and the
    release policy still refuses its output with ``match``. Returns the review."""
    request = team.submit(function)
    review = blocked_by_review(team, request, *rules)
    team.force_approve(request)
    team.refused(function.__name__, match, **inputs)
    return review


def blocked_then_failed(
    team: RedTeam, function: object, rules: tuple[str, ...], cause: str, **inputs: object
) -> object:
    """The static review blocks ``function`` with ``rules``; a careless owner force-approves it anyway, and the
    sandbox stops it in its worker: a failed run for ``cause`` (the traceback, in the owner's log only). This
    site's sandbox is on (the default): before issue 10 these attempts ran and the release rules refused their
    output. Returns the review."""
    request = team.submit(function)
    review = blocked_by_review(team, request, *rules)
    team.force_approve(request)
    team.failed(function.__name__, cause, **inputs)
    return review


def looks_harmless(team: RedTeam, request_id: str) -> object:
    """Static review passes; only the template check (and limits/inputs) gives the attempt away."""
    review = team.review(request_id)
    assert check(review, "static review"), review.render()
    assert not check(review, "the code is the job template")
    assert "+" in review.template.diff or "not built from the job template" in review.template.diff
    return review


def tampered_and_refused(team: RedTeam, job_parts: tuple, name: str, payload: str, match: str) -> object:
    """The job template with ``payload`` added: it looks harmless to the static review, the template diff gives
    it away, a careless owner force-approves it, and the release policy refuses its output with ``match``."""
    weights, folder = job_parts
    job = small_job(team.federation, name)
    function = tampered_template(job.site_function(team.federation), payload, folder)
    request = team.submit(function)
    review = looks_harmless(team, request)
    team.force_approve(request, first_try=True)
    team.refused(function.__name__, match, weights=weights, rnd=0, cohort={})
    return review


# --------------------------------------------------------------------------------------------------------------
# The attempts: functions a researcher submits. Imports sit inside, as PySyft ships only the function's source.


def rt_raw_images(train_images, train_labels, val_images, val_labels, weights, rnd):
    import numpy as np

    return {"round": int(rnd), "images": np.asarray(train_images)}


def rt_labels_as_confusion(train_images, train_labels, val_images, val_labels, weights, rnd):
    import numpy as np

    labels = np.asarray(val_labels)
    return {
        "round": int(rnd),
        "val": {"loss": 0.0, "accuracy": 0.0, "num_samples": int(len(labels)), "confusion": labels},
    }


def rt_read_file(train_images, train_labels, val_images, val_labels, weights, rnd):
    hostname = open("/etc/hostname").read()
    return {
        "round": int(rnd),
        "val": {"loss": hostname, "accuracy": 0.0, "num_samples": 0, "confusion": None},
    }


def rt_socket(train_images, train_labels, val_images, val_labels, weights, rnd, port):
    import socket

    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    peer = connection.getpeername()
    connection.close()
    return {"round": int(rnd), "peer": str(peer), "labels": [int(v) for v in train_labels[:16]]}


def rt_pickle(train_images, train_labels, val_images, val_labels, weights, rnd):
    import pickle

    return {"round": int(rnd), "blob": pickle.dumps(train_images)}


def rt_eval_exec(train_images, train_labels, val_images, val_labels, weights, rnd):
    scope = {"labels": train_labels}
    exec("leak = [int(v) for v in labels]", scope)
    return {"round": int(rnd), "val": eval("leak", scope)}


def rt_subclasses_to_builtins(train_images, train_labels, val_images, val_labels, weights, rnd):
    for candidate in ().__class__.__base__.__subclasses__():
        namespace = getattr(candidate.__init__, "__globals__", {}).get("__builtins__")
        if namespace is not None:
            opener = namespace["open"] if isinstance(namespace, dict) else namespace.open
            return {"round": int(rnd), "hostname": opener("/etc/hostname").read()}
    return {"round": int(rnd)}


def rt_frames_to_server(train_images, train_labels, val_images, val_labels, weights, rnd):
    import sys

    frame = sys._getframe()
    while frame is not None and "context" not in frame.f_locals:
        frame = frame.f_back
    context = frame.f_locals["context"]
    return {"round": int(rnd), "server": str(context.server), "role": str(context.role)}


def rt_gc_to_server(train_images, train_labels, val_images, val_labels, weights, rnd):
    import gc

    servers = [str(o) for o in gc.get_objects() if o.__class__.__name__ == "Datasite"]
    return {"round": int(rnd), "servers": servers}


def rt_registry_to_admin(train_images, train_labels, val_images, val_labels, weights, rnd):
    from syft.server.server import AuthServerContextRegistry

    contexts = AuthServerContextRegistry.__server_context_registry__
    return {"round": int(rnd), "roles": [str(c.role) for c in contexts.values()]}


def rt_datasite_parameter(train_images, train_labels, val_images, val_labels, weights, rnd, datasite):
    return {"round": int(rnd), "client": str(datasite)}


def rt_context_parameter(train_images, train_labels, val_images, val_labels, weights, rnd, context):
    return {"round": int(rnd), "server": str(context.server)}


def rt_forwardref_eval(train_images, train_labels, val_images, val_labels, weights, rnd):
    import typing

    source = "(lambda v=" + "_" * 2 + "import" + "_" * 2 + "('platform').node(): v)"
    leak = typing.ForwardRef(source)._evaluate({}, {}, frozenset())
    return {"round": int(rnd), "node": leak()}


def rt_create_fn_exec(train_images, train_labels, val_images, val_labels, weights, rnd):
    import dataclasses

    body = ["return " + "_" * 2 + "import" + "_" * 2 + "('platform').node()"]
    return {"round": int(rnd), "node": dataclasses._create_fn("g", [], body, globals={})()}


def rt_write_files(train_images, train_labels, val_images, val_labels, weights, rnd):
    import numpy as np

    np.save("/tmp/fedimg-redteam-never-written.npy", train_images)
    np.asarray(train_images).tofile("/tmp/fedimg-redteam-never-written.raw")
    return {"round": int(rnd)}


def rt_numpy_file_helpers(train_images, train_labels, val_images, val_labels, weights, rnd):
    import numpy as np

    hostname = np.fromregex("/etc/hostname", r"(.+)", [("line", "U64")])
    np.asarray(train_images).dump("/tmp/fedimg-redteam-never-written.pkl")
    np.savez("/tmp/fedimg-redteam-never-written.npz", images=train_images)
    return {"round": int(rnd), "hostname": hostname}


def rt_modules_hanging_off_torch(train_images, train_labels, val_images, val_labels, weights, rnd):
    import torch

    descriptor = torch.os.open("/etc/hostname", torch.os.O_RDONLY)
    hostname = torch.os.read(descriptor, 256)
    torch.os.close(descriptor)
    return {"round": int(rnd), "hostname": hostname, "modules": len(torch.sys.modules)}


def rt_from_import_alias(train_images, train_labels, val_images, val_labels, weights, rnd):
    from numpy import fromregex as parse_lines

    return {"round": int(rnd), "hostname": parse_lines("/etc/hostname", r"(.+)", [("line", "U64")])}


def rt_unpickle_via_numpy(train_images, train_labels, val_images, val_labels, weights, rnd):
    import numpy as np

    return {"round": int(rnd), "object": np.compat.pickle.loads(weights["blob"])}


def rt_format_string_frames(train_images, train_labels, val_images, val_labels, weights, rnd):
    def walker():
        # generator -> this function -> PySyft's wrapper -> eval -> execute_byte_code, whose locals hold the context
        # the attack is str.format reaching attributes: it must stay a format string, not an f-string
        yield "{0.gi_frame.f_back.f_back.f_back.f_back.f_locals[context].server}".format(generator)

    generator = walker()
    return {"round": int(rnd), "server": next(generator)}


def rt_array_that_lies_about_its_shape(train_images, train_labels, val_images, val_labels, weights, rnd):
    import numpy as np

    class Disguised(np.ndarray):
        shape = property(lambda self: self.claimed)

    leaked = {}
    for name, value in weights.items():
        array = np.asarray(train_images, dtype=np.asarray(value).dtype).view(Disguised)
        array.claimed = np.asarray(value).shape
        leaked[name] = array
    count = int(len(val_labels))
    confusion = np.zeros((10, 10), dtype=np.int64)
    confusion[0, 0] = count
    return {
        "round": int(rnd),
        "val": {"loss": 1.0, "accuracy": 0.1, "num_samples": count, "confusion": confusion},
        "weights": leaked,
        "num_samples": int(len(train_images)),
        "train": {"loss": 1.0, "accuracy": 0.1},
    }


def rt_images_in_right_shaped_weights(train_images, train_labels, val_images, val_labels, weights, rnd):
    import numpy as np

    pixels = np.asarray(train_images, dtype=np.float32).ravel() / 255.0
    leaked, start = {}, 0
    for name, value in weights.items():
        value = np.asarray(value)
        chunk = pixels[start : start + value.size]
        start += value.size
        leaked[name] = np.resize(chunk, value.shape).astype(value.dtype)
    count = int(len(val_labels))
    confusion = np.zeros((10, 10), dtype=np.int64)
    confusion[0, 0] = count
    return {
        "round": int(rnd),
        "val": {"loss": 1.0, "accuracy": 0.1, "num_samples": count, "confusion": confusion},
        "weights": leaked,
        "num_samples": int(len(train_images)),
        "train": {"loss": 1.0, "accuracy": 0.1},
    }


class ReleaseEverything(sy.CustomOutputPolicy):
    """A researcher's own output policy: any number of runs, any output."""

    limit: int = 1000

    def __init__(self, limit: int = 1000):
        self.limit = limit

    def is_valid(self, context):
        return True

    def apply_to_output(self, context, outputs, update_policy=True):
        return outputs


def rt_behind_own_policy(train_images, train_labels, val_images, val_labels, weights, rnd):
    import numpy as np

    return {"round": int(rnd), "images": np.asarray(train_images)}


# --------------------------------------------------------------------------------------------------------------
# Returning data directly: a careless owner approves, the release policy refuses.


def test_raw_images(team) -> None:
    request = team.submit(rt_raw_images)
    looks_harmless(team, request)
    team.force_approve(request, process=True)
    team.refused("rt_raw_images", r"must be a dict with keys .*'images'", rnd=0)


def test_labels_as_the_confusion_matrix(team) -> None:
    request = team.submit(rt_labels_as_confusion)
    looks_harmless(team, request)
    team.force_approve(request, first_try=True)
    team.refused("rt_labels_as_confusion", r"val.confusion must be a 10x10 integer array", rnd=0)


def test_template_with_an_extra_key_holding_images(team, job_parts) -> None:
    review = tampered_and_refused(
        team,
        job_parts,
        "extra_key",
        'result["images"] = np.asarray(train_images[:8])',
        r"must be a dict with keys .*'images'",
    )
    assert '+    result["images"] = np.asarray(train_images[:8])' in review.template.diff


def test_per_sample_losses_in_place_of_the_confusion_matrix(team, job_parts) -> None:
    payload = """
with torch.no_grad():
    per_sample = F.cross_entropy(model(as_inputs(val_images)), torch.as_tensor(np.asarray(val_labels)), reduction="none")
result["val"]["confusion"] = per_sample.numpy()
"""
    tampered_and_refused(
        team, job_parts, "per_sample_loss", payload, r"val.confusion must be a 10x10 integer array"
    )


def test_per_sample_gradients_as_weights(team, job_parts) -> None:
    # the template now trains from the memory maps in batches (no whole-split `images`): the payload batches itself
    payload = """
gradients = []
for i in range(8):
    model.zero_grad()
    loss_function(model(as_inputs(train_images[i:i + 1])), torch.as_tensor(np.asarray(train_labels[i:i + 1]), dtype=torch.long)).backward()
    gradients.append(np.concatenate([p.grad.detach().numpy().ravel() for p in model.parameters()]))
first = next(iter(result["weights"]))
result["weights"][first] = np.stack(gradients).astype(np.float32)
"""
    tampered_and_refused(
        team,
        job_parts,
        "per_sample_grad",
        payload,
        r"weights\['conv1.weight'\] must be an array of shape \(4, 1, 3, 3\)",
    )


def test_labels_in_a_weights_array_of_the_wrong_shape(team, job_parts) -> None:
    payload = 'result["weights"]["head.bias"] = np.asarray(train_labels, dtype=np.float32)'
    tampered_and_refused(
        team,
        job_parts,
        "labels_in_bias",
        payload,
        r"weights\['head.bias'\] must be an array of shape \(10,\)",
    )


def test_images_in_a_weights_entry_of_the_right_name(team, job_parts) -> None:
    payload = 'result["weights"]["conv1.weight"] = as_inputs(train_images[:4]).numpy()'
    tampered_and_refused(
        team,
        job_parts,
        "images_in_conv",
        payload,
        r"weights\['conv1.weight'\] must be an array of shape \(4, 1, 3, 3\) and dtype float32",
    )


def test_an_array_that_lies_about_its_shape(team, job_parts) -> None:
    weights, _ = job_parts
    request = team.submit(rt_array_that_lies_about_its_shape)
    looks_harmless(team, request)
    team.force_approve(request, first_try=True)
    # sandbox on: the subclass does not survive the worker's wire format (plain arrays cross), so the release
    # rules see the images' true shape; at an unconfined site the subclass rule refuses it
    team.refused(
        "rt_array_that_lies_about_its_shape",
        r"is a Disguised, a subclass of ndarray|weights\['conv1.weight'\] must be an array of shape",
        weights=weights,
        rnd=0,
    )


def test_images_in_right_shaped_weights_are_stopped_by_review_only(team, job_parts) -> None:
    """The release policy cannot tell pixels from weights of the right names, shapes and dtypes: the template check can."""
    from policies.release import check_release

    weights, _ = job_parts
    request = team.submit(rt_images_in_right_shaped_weights)
    review = looks_harmless(team, request)
    assert failed_checks(review)
    code, printed = team.fedimg_review("approve", request)
    assert code == 2 and "the code is the job template" in printed
    team.deny(request, "not the job template: writes pixels into the weights")
    # what the release check alone would do with this output (run here on stand-in data): accept it
    images = np.random.default_rng(0).integers(0, 255, (40, 1, 16, 16), dtype=np.uint8)
    labels = np.zeros(40, np.int64)
    output = rt_images_in_right_shaped_weights(images, labels, images[:30], labels[:30], weights, 0)
    check_release(
        output,
        global_weights=weights,
        num_train=40,
        num_val=30,
        num_classes=NUM_CLASSES,
        min_samples=20,
        max_output_bytes=2**26,
    )
    with pytest.raises(Exception, match="(?i)denied|not approved|approval"):
        team.run("rt_images_in_right_shaped_weights", weights=weights, rnd=0)
    assert [
        r
        for r in team.audit_records()
        if r["event"] == "refusal" and r.get("function") == "rt_images_in_right_shaped_weights"
    ]


# --------------------------------------------------------------------------------------------------------------
# Files, sockets, pickling, code from strings: the static review blocks them. The harmless ones (reading
# /etc/hostname, a loopback connection to the site itself) are also force-approved: the output is still refused,
# but their side effect happened — the hook checks outputs only, it does not contain the code (README).


def test_read_a_file(team) -> None:
    # sandbox on: open() of a file outside the worker's inputs fails (Landlock); before, the output was refused
    blocked_then_failed(
        team,
        rt_read_file,
        ("forbidden-name",),
        r"PermissionError: \[Errno 13\] Permission denied: '/etc/hostname'",
        rnd=0,
    )


def test_open_a_socket(team) -> None:
    # sandbox on: socket() fails (seccomp), so no connection is made; before, it was made and the output refused
    review = blocked_then_failed(
        team,
        rt_socket,
        ("import-not-allowed", "forbidden-name"),
        r"PermissionError: \[Errno 1\] Operation not permitted",
        rnd=0,
        port=team.site.port,
    )
    assert any("'socket'" in f.message for f in review.static.errors)


def test_pickle_the_images(team) -> None:
    # sandbox on: pickled bytes cannot cross the worker's wire format (numbers and arrays only)
    blocked_then_failed(
        team,
        rt_pickle,
        ("import-not-allowed", "forbidden-name", "forbidden-attribute"),
        r"a bytes cannot cross",
        rnd=0,
    )


def test_eval_and_exec(team) -> None:
    review = blocked_then_refused(team, rt_eval_exec, ("forbidden-name",), r"val must hold exactly", rnd=0)
    assert {"'eval'", "'exec'"} <= {f.message.split()[-1] for f in review.static.errors}


def test_write_files_with_numpy(team) -> None:
    request = team.submit(rt_write_files)
    review = blocked_by_review(team, request, "forbidden-attribute")
    assert {".save", ".tofile"} <= {f.message.split()[2] for f in review.static.errors}
    team.deny(request, "writes files on the site", process=True)
    # the denied code cannot be run; the attempt is refused before it starts, and logged
    with pytest.raises(Exception, match="(?i)denied|not approved|approval"):
        team.run("rt_write_files", rnd=0)
    assert [
        r for r in team.audit_records() if r["event"] == "refusal" and r.get("function") == "rt_write_files"
    ]
    assert not Path("/tmp/fedimg-redteam-never-written.npy").exists()


def test_numpy_file_helpers(team) -> None:
    request = team.submit(rt_numpy_file_helpers)
    review = blocked_by_review(team, request, "forbidden-attribute")
    assert {".fromregex", ".dump", ".savez"} <= {f.message.split()[2] for f in review.static.errors}
    team.deny(request, "reads and writes files on the site")


def test_unpickle_through_numpy(team) -> None:
    request = team.submit(rt_unpickle_via_numpy)
    review = blocked_by_review(team, request, "forbidden-attribute")
    assert {".compat", ".pickle", ".loads"} <= {f.message.split()[2] for f in review.static.errors}
    team.deny(request, "unpickles researcher bytes on the site")


# --------------------------------------------------------------------------------------------------------------
# Reaching the interpreter and the server (frames, gc, syft's registry, injected clients, code from strings).
# Review blocks them all; the read-only ones are force-approved and their output is still refused. (With the
# server's objects in hand, code could switch the hook off: review is the barrier for these, see README.)


def test_builtins_through_subclasses(team) -> None:
    # sandbox on: the builtins' open() reaches no file outside the inputs (Landlock)
    blocked_then_failed(
        team,
        rt_subclasses_to_builtins,
        ("private-attribute", "forbidden-name"),
        r"PermissionError: \[Errno 13\] Permission denied: '/etc/hostname'",
        rnd=0,
    )


def test_frames_to_the_server_context(team) -> None:
    # sandbox on: the worker's frames lead to no server context (the server is another process)
    blocked_then_failed(
        team,
        rt_frames_to_server,
        ("import-not-allowed", "private-attribute", "forbidden-attribute", "forbidden-name"),
        r"f_locals|'context'",
        rnd=0,
    )


def test_gc_to_the_server(team) -> None:
    blocked_then_refused(
        team,
        rt_gc_to_server,
        ("import-not-allowed", "forbidden-name", "private-attribute"),
        r"must be a dict with keys .*'servers'",
        rnd=0,
    )


def test_syft_context_registry(team) -> None:
    blocked_then_denied(
        team,
        rt_registry_to_admin,
        ("import-not-allowed", "private-attribute"),
        "reaches the server's admin context",
    )


def test_a_parameter_named_datasite(team) -> None:
    # sandbox on: nothing fills 'datasite' in the worker (no server client crosses into it)
    review = blocked_then_failed(team, rt_datasite_parameter, ("forbidden-parameter",), r"datasite", rnd=0)
    assert not check(review, "private inputs are this site's four assets")


def test_a_parameter_named_context(team) -> None:
    blocked_then_denied(
        team, rt_context_parameter, ("forbidden-parameter", "forbidden-name"), "asks for the server context"
    )


def test_forwardref_evaluates_a_string(team) -> None:
    blocked_then_refused(
        team,
        rt_forwardref_eval,
        ("import-not-allowed", "private-attribute", "forbidden-attribute"),
        r"must be a dict with keys .*'node'",
        rnd=0,
    )


def test_dataclasses_create_fn_runs_a_string(team) -> None:
    blocked_then_denied(
        team, rt_create_fn_exec, ("import-not-allowed", "private-attribute"), "runs code from a string"
    )


def test_modules_hanging_off_torch(team) -> None:
    # sandbox on: torch.os.open reaches no file outside the inputs (Landlock)
    review = blocked_then_failed(
        team,
        rt_modules_hanging_off_torch,
        ("forbidden-attribute",),
        r"PermissionError: \[Errno 13\] Permission denied: '/etc/hostname'",
        rnd=0,
    )
    assert {".os", ".sys", ".open"} <= {f.message.split()[2] for f in review.static.errors}


def test_from_import_of_a_forbidden_name(team) -> None:
    # sandbox on: fromregex cannot open /etc/hostname (Landlock)
    blocked_then_failed(
        team,
        rt_from_import_alias,
        ("forbidden-attribute",),
        r"PermissionError: \[Errno 13\] Permission denied: '/etc/hostname'",
        rnd=0,
    )


def test_format_string_walks_frames(team) -> None:
    # sandbox on: the frames it walks are the worker's, which hold no server context
    review = blocked_then_failed(
        team, rt_format_string_frames, ("suspicious-string",), r"KeyError|AttributeError", rnd=0
    )
    assert any("gi_frame" in f.message for f in review.static.errors)


# --------------------------------------------------------------------------------------------------------------
# Policy games: more runs than approved, a researcher-written output policy.


def test_more_rounds_than_approved(team, job_parts) -> None:
    job = small_job(team.federation, "rounds", rounds=1)
    request = submit_job(team, job)
    review = team.review(request)
    assert all(review.checks.values()), review.render()
    team.approve(request)
    name = job.site_function(team.federation).name
    weights = job.initial_weights()
    trained = team.run(name, weights=weights, rnd=0, cohort={})
    assert set(trained) >= {"weights", "val", "train"}
    final = team.run(name, weights=trained["weights"], rnd=1, cohort={})
    assert set(final) - {"device"} == {"round", "val"}  # the template also says where it ran
    # rounds + 1 = 2 runs approved and spent; a third (another training round) is refused
    team.refused(
        name,
        r"(?i)has run 2 of the 2 times|output policy is not valid|execution denied",
        weights=trained["weights"],
        rnd=0,
        cohort={},
    )
    releases = [r for r in team.audit_records() if r["event"] == "release" and r["function"] == name]
    assert [r["run"] for r in releases] == [1, 2]


def test_a_researcher_written_output_policy(team) -> None:
    request = team.submit(rt_behind_own_policy, output_policy=ReleaseEverything(limit=1000))
    review = team.review(request)
    assert not check(review, "output policy is PySyft's execution count"), review.render()
    team.force_approve(request)
    team.refused(
        "rt_behind_own_policy", r"researcher-written output (\(or input\) )?policies are not accepted", rnd=0
    )


def test_approved_code_runs_once_per_call_not_again_on_the_mocks(team, job_parts) -> None:
    """Not an attack: PySyft 0.9.5 would run every approved call a second time on the mock twins; the site does not.

    The code counts its runs in a module attribute of its process and fails from its second run on (it can write
    no file, not even in its worker's folder). A job's calls share one worker, so the first call succeeds only if
    it ran once, and the second call (the job's other approved run) fails on the count: the counter works."""
    weights, folder = job_parts
    job = small_job(team.federation, "runs_once")
    function = tampered_template(
        job.site_function(team.federation),
        'np.fedimg_runs = getattr(np, "fedimg_runs", 0) + 1\n'
        "if np.fedimg_runs > 1:\n"
        '    raise RuntimeError(f"run {np.fedimg_runs} in this worker")',
        folder,
    )
    request = team.submit(function)
    team.force_approve(request)
    released = team.run(function.__name__, weights=weights, rnd=0, cohort={})
    assert set(released) >= {"weights", "val", "train"}
    team.failed(function.__name__, r"RuntimeError: run 2 in this worker", weights=weights, rnd=0, cohort={})


def test_the_audit_log_is_intact(team) -> None:
    """Runs last in this module: every decision and refusal above is in one hash chain."""
    records = team.audit_records()
    assert {r["event"] for r in records} >= {"decision", "refusal"}
    assert team.verify_audit() == []
