"""How many numbers a request's model holds, counted from its source without running it.

A training run releases the model's weights (its ``state_dict``: parameters and
buffers such as batch-norm statistics), so their number is what the owner is told
leaves the site. The researcher's code must not run before it is approved, so the
count is read from the model class's ``__init__``: its arguments bound from the job's
``model_kwargs`` and the class's default values, plain arithmetic folded, and the
sizes of the ``torch.nn`` layers it builds (``Conv2d``, ``Linear``, ``BatchNorm2d``,
``Sequential``...) computed from their constructor arguments as PyTorch does. Any
construct this cannot follow (an unknown layer, ``nn.Parameter``, a call of another
method, a value read from elsewhere) gives no count rather than a wrong one.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelSize", "model_size"]

_MAX_STEPS = 100_000  # statements and loop turns folded per count: a bound on what a request can cost us
_LARGEST = 10**18  # no model has more numbers: a larger value is not a size


@dataclass(frozen=True)
class ModelSize:
    """The numbers in a model's weights.

    Parameters
    ----------
    parameters : int
        Trainable numbers (``sum(p.numel() for p in model.parameters())``).
    buffers : int
        The other numbers of its ``state_dict`` (batch-norm running statistics and counters).

    Examples
    --------
    >>> ModelSize(100, 5).weights
    105
    """

    parameters: int
    buffers: int = 0

    @property
    def weights(self) -> int:
        """Every number of the ``state_dict``: what a training run releases."""
        return self.parameters + self.buffers

    def __add__(self, other: ModelSize) -> ModelSize:
        return ModelSize(self.parameters + other.parameters, self.buffers + other.buffers)


class _Uncountable(Exception):
    """The source does something the count cannot follow."""


def model_size(
    code: str, model_kwargs: Mapping[str, Any] | None = None, model_name: str | None = None
) -> ModelSize | None:
    """The size of the model a site function (the job template) builds, read from its source.

    Parameters
    ----------
    code : str
        The submitted site function: the model class is defined in it and instantiated as
        ``model = Name(**CONFIG["model_kwargs"])``; or a module defining one class.
    model_kwargs : Mapping, optional
        The job's ``model_kwargs`` (the template's ``CONFIG["model_kwargs"]``).
    model_name : str, optional
        The class to count; by default the one the template instantiates, or the only class.

    Returns
    -------
    ModelSize or None
        None when the model cannot be counted before it runs.

    Examples
    --------
    >>> source = (
    ...     "class Net(nn.Module):\\n"
    ...     "    def __init__(self, hidden=8):\\n"
    ...     "        super().__init__()\\n"
    ...     "        self.body = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.BatchNorm1d(hidden))\\n"
    ...     "        self.head = nn.Linear(hidden, 2, bias=False)\\n"
    ... )
    >>> model_size(source, {"hidden": 10})
    ModelSize(parameters=90, buffers=21)
    >>> model_size(source.replace("nn.ReLU()", "nn.Mystery()")) is None
    True
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    function = next((node for node in tree.body if isinstance(node, ast.FunctionDef)), None)
    body = function.body if function is not None else tree.body
    classes = {node.name: node for node in body if isinstance(node, ast.ClassDef)}
    name = model_name or (_instantiated_class(body) if function is not None else None)
    if name is None and len(classes) == 1:
        name = next(iter(classes))
    if name is None or name not in classes:
        return None
    try:
        return _Counter(classes).instantiate(name, [], dict(model_kwargs or {}))
    except (
        _Uncountable,
        ArithmeticError,
        LookupError,
        TypeError,
        ValueError,
        AttributeError,
        RecursionError,
    ):
        return None


def _instantiated_class(body: list[ast.stmt]) -> str | None:
    """The class of the template's ``model = Name(**CONFIG["model_kwargs"])``."""
    for node in body:
        if (
            isinstance(node, ast.Assign)
            and getattr(node.targets[0], "id", None) == "model"
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
        ):
            return node.value.func.id
    return None


def _product(value: Any) -> int:
    """The number of elements of a shape given as an int or a sequence of ints."""
    sizes = list(value) if isinstance(value, (tuple, list)) else [value]
    if not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in sizes):
        raise _Uncountable(f"not a size: {value!r}")
    return math.prod(sizes)


def _kernel(value: Any, dims: int) -> int:
    return _product([value] * dims if isinstance(value, int) else value)


def _conv(dims: int, transposed: bool) -> tuple[tuple[str, ...], dict[str, Any], Callable[[dict], ModelSize]]:
    names = ["in_channels", "out_channels", "kernel_size", "stride", "padding"]
    names += (
        ["output_padding", "groups", "bias", "dilation"] if transposed else ["dilation", "groups", "bias"]
    )
    defaults: dict[str, Any] = {"stride": 1, "padding": 0, "output_padding": 0, "dilation": 1, "groups": 1}
    defaults |= {"bias": True, "padding_mode": "zeros", "device": None, "dtype": None}

    def size(a: dict) -> ModelSize:
        fan_in, fan_out = (
            (a["out_channels"], a["in_channels"]) if transposed else (a["in_channels"], a["out_channels"])
        )
        if fan_in % a["groups"]:
            raise _Uncountable("channels not divisible by groups")
        weight = fan_out * (fan_in // a["groups"]) * _kernel(a["kernel_size"], dims)
        return ModelSize(weight + (a["out_channels"] if a["bias"] else 0))

    return (*names, "padding_mode", "device", "dtype"), defaults, size


def _norm(
    affine_default: bool, tracks_default: bool
) -> tuple[tuple[str, ...], dict, Callable[[dict], ModelSize]]:
    defaults = {"eps": 1e-5, "momentum": 0.1, "affine": affine_default, "track_running_stats": tracks_default}

    def size(a: dict) -> ModelSize:
        count = _product(a["num_features"])
        return ModelSize(2 * count if a["affine"] else 0, 2 * count + 1 if a["track_running_stats"] else 0)

    names = ("num_features", "eps", "momentum", "affine", "track_running_stats", "device", "dtype")
    return names, defaults | {"device": None, "dtype": None}, size


def _layer_norm(a: dict) -> ModelSize:
    count = _product(a["normalized_shape"])
    return ModelSize(count * (1 + bool(a["bias"])) if a["elementwise_affine"] else 0)


_FREE_LAYERS = frozenset(
    """ReLU ReLU6 LeakyReLU ELU SELU CELU GELU SiLU Mish Sigmoid Tanh Hardtanh Hardswish Hardsigmoid Softplus
    Softsign Softmax Softmax2d LogSoftmax Dropout Dropout1d Dropout2d Dropout3d AlphaDropout MaxPool1d
    MaxPool2d MaxPool3d AvgPool1d AvgPool2d AvgPool3d AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d
    AdaptiveMaxPool1d AdaptiveMaxPool2d AdaptiveMaxPool3d Flatten Unflatten Identity Upsample ZeroPad2d
    ConstantPad1d ConstantPad2d ReflectionPad2d ReplicationPad2d PixelShuffle""".split()
)
# layer -> (its positional argument names, their defaults, its size from the bound arguments)
_LAYERS: dict[str, tuple[tuple[str, ...], dict[str, Any], Callable[[dict], ModelSize]]] = {
    "Linear": (
        ("in_features", "out_features", "bias", "device", "dtype"),
        {"bias": True, "device": None, "dtype": None},
        lambda a: ModelSize(
            _product(a["in_features"]) * _product(a["out_features"]) + a["bias"] * a["out_features"]
        ),
    ),
    "Conv1d": _conv(1, False),
    "Conv2d": _conv(2, False),
    "Conv3d": _conv(3, False),
    "ConvTranspose1d": _conv(1, True),
    "ConvTranspose2d": _conv(2, True),
    "ConvTranspose3d": _conv(3, True),
    "BatchNorm1d": _norm(True, True),
    "BatchNorm2d": _norm(True, True),
    "BatchNorm3d": _norm(True, True),
    "InstanceNorm1d": _norm(False, False),
    "InstanceNorm2d": _norm(False, False),
    "InstanceNorm3d": _norm(False, False),
    "GroupNorm": (
        ("num_groups", "num_channels", "eps", "affine", "device", "dtype"),
        {"eps": 1e-5, "affine": True, "device": None, "dtype": None},
        lambda a: ModelSize(2 * _product(a["num_channels"]) if a["affine"] else 0),
    ),
    "LayerNorm": (
        ("normalized_shape", "eps", "elementwise_affine", "bias", "device", "dtype"),
        {"eps": 1e-5, "elementwise_affine": True, "bias": True, "device": None, "dtype": None},
        _layer_norm,
    ),
    "Embedding": (
        (
            "num_embeddings",
            "embedding_dim",
            "padding_idx",
            "max_norm",
            "norm_type",
            "scale_grad_by_freq",
            "sparse",
        ),
        {
            "padding_idx": None,
            "max_norm": None,
            "norm_type": 2.0,
            "scale_grad_by_freq": False,
            "sparse": False,
        },
        lambda a: ModelSize(_product(a["num_embeddings"]) * _product(a["embedding_dim"])),
    ),
    "PReLU": (
        ("num_parameters", "init", "device", "dtype"),
        {"num_parameters": 1, "init": 0.25, "device": None, "dtype": None},
        lambda a: ModelSize(_product(a["num_parameters"])),
    ),
}
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_BUILTINS: dict[str, Callable[..., Any]] = {
    "int": int,
    "float": float,
    "bool": bool,
    "max": max,
    "min": min,
    "abs": abs,
    "round": round,
    "len": len,
    "sum": sum,
    "range": lambda *a: list(_bounded(range(*a))),
    "tuple": tuple,
    "list": list,
}


def _bounded(values: range) -> range:
    if len(values) > _MAX_STEPS:
        raise _Uncountable("a loop too long to follow")
    return values


def _arithmetic(op: ast.operator, left: Any, right: Any) -> Any:
    """``left op right`` on plain values, refusing what could take the reviewing site's memory or time."""
    if any(isinstance(side, ModelSize) for side in (left, right)):
        raise _Uncountable("arithmetic on a layer")
    if isinstance(op, ast.Pow) and (not isinstance(right, int) or abs(right) > 64):
        raise _Uncountable("a large power")
    if isinstance(op, ast.Mult) and any(isinstance(side, (str, list, tuple)) for side in (left, right)):
        count = right if isinstance(left, (str, list, tuple)) else left
        if not isinstance(count, int) or count > _MAX_STEPS:
            raise _Uncountable("a long repetition")
    result = _BINARY[type(op)](left, right)
    if isinstance(result, int) and abs(result) > _LARGEST:
        raise _Uncountable("a number larger than any model")
    if isinstance(result, (str, list, tuple)) and len(result) > _MAX_STEPS:
        raise _Uncountable("a value too long to follow")
    return result


class _Counter:
    """Folds ``__init__`` bodies of the request's own classes, summing the layers they assign to ``self``."""

    def __init__(self, classes: Mapping[str, ast.ClassDef]) -> None:
        self.classes = classes
        self.steps = 0

    def instantiate(self, name: str, args: list, kwargs: dict) -> ModelSize:
        node = self.classes[name]
        if not all(_is_module_base(base) for base in node.bases):
            raise _Uncountable(f"class {name} derives from something other than nn.Module")
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        if init is None:
            return ModelSize(0)
        env = self._bind(init.args, args, kwargs)
        attributes: dict[str, Any] = {}
        self._run(init.body, env, attributes)
        return sum((v for v in attributes.values() if isinstance(v, ModelSize)), ModelSize(0))

    def _bind(self, signature: ast.arguments, args: list, kwargs: dict) -> dict[str, Any]:
        if signature.vararg or signature.kwarg or signature.posonlyargs:
            raise _Uncountable("*args, **kwargs or positional-only arguments")
        names = [a.arg for a in signature.args[1:]]  # after self
        defaults = dict(zip(names[len(names) - len(signature.defaults) :], signature.defaults, strict=True))
        for argument, default in zip(signature.kwonlyargs, signature.kw_defaults, strict=True):
            names.append(argument.arg)
            if default is not None:
                defaults[argument.arg] = default
        if len(args) > len(signature.args) - 1 or set(kwargs) - set(names):
            raise _Uncountable("arguments the class does not take")
        env = dict(zip(names, args, strict=False))
        for name in names:
            if name in kwargs:
                if name in env:
                    raise _Uncountable(f"argument {name} given twice")
                env[name] = kwargs[name]
            elif name not in env:
                env[name] = self._eval(defaults[name], {}, {})  # a missing default: KeyError, no count
        return env

    def _run(self, body: list[ast.stmt], env: dict, attributes: dict) -> None:
        for statement in body:
            self.steps += 1
            if self.steps > _MAX_STEPS:
                raise _Uncountable("too many steps")
            self._statement(statement, env, attributes)

    def _statement(self, node: ast.stmt, env: dict, attributes: dict) -> None:
        if isinstance(node, ast.Pass):
            return
        if isinstance(node, ast.Expr):
            self._expression_statement(node.value, env, attributes)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = self._eval(node.value, env, attributes)
            for target in targets:
                self._assign(target, value, env, attributes)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            current = env[node.target.id]
            env[node.target.id] = _arithmetic(node.op, current, self._eval(node.value, env, attributes))
        elif isinstance(node, ast.If):
            branch = node.body if self._eval(node.test, env, attributes) else node.orelse
            self._run(branch, env, attributes)
        elif isinstance(node, ast.For) and not node.orelse:
            for item in self._eval(node.iter, env, attributes):
                self._assign(node.target, item, env, attributes)
                self._run(node.body, env, attributes)
        else:
            raise _Uncountable(f"statement {type(node).__name__}")

    def _expression_statement(self, value: ast.expr, env: dict, attributes: dict) -> None:
        if isinstance(value, ast.Constant):
            return  # a docstring
        if not isinstance(value, ast.Call) or not isinstance(value.func, ast.Attribute):
            raise _Uncountable("an expression statement")
        owner, method = value.func.value, value.func.attr
        if method == "__init__" and (_is_super(owner) or _is_module_base(owner)):
            return
        if (
            method in ("append", "extend")
            and isinstance(owner, ast.Name)
            and isinstance(env.get(owner.id), list)
        ):
            (argument,) = [self._eval(arg, env, attributes) for arg in value.args]
            env[owner.id].append(argument) if method == "append" else env[owner.id].extend(argument)
            return
        raise _Uncountable(f"call of {method}")

    def _assign(self, target: ast.expr, value: Any, env: dict, attributes: dict) -> None:
        if isinstance(target, ast.Name):
            env[target.id] = value
        elif isinstance(target, ast.Attribute) and _is_self(target.value):
            attributes[target.attr] = value  # a reassigned layer replaces the earlier one, as in PyTorch
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = list(value)
            if len(values) != len(target.elts):
                raise _Uncountable("unpacking")
            for element, item in zip(target.elts, values, strict=True):
                self._assign(element, item, env, attributes)
        else:
            raise _Uncountable(f"assignment to {type(target).__name__}")

    def _eval(self, node: ast.expr, env: dict, attributes: dict) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise _Uncountable(f"name {node.id}")
            return env[node.id]
        if isinstance(node, ast.Attribute) and _is_self(node.value):
            value = attributes[node.attr]
            if isinstance(value, ModelSize):
                raise _Uncountable("a layer used as a value")
            return value
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, env, attributes), self._eval(node.right, env, attributes)
            return _arithmetic(node.op, left, right)
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, env, attributes)
            unary: dict[type, Callable[[Any], Any]] = {
                ast.USub: operator.neg,
                ast.UAdd: operator.pos,
                ast.Not: operator.not_,
            }
            return unary[type(node.op)](operand)
        if isinstance(node, ast.BoolOp):  # Python's: the first value that decides, not a bool
            for value_node in node.values:
                value = self._eval(value_node, env, attributes)
                if bool(value) != isinstance(node.op, ast.And):
                    return value
            return value
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, env, attributes)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comparator, env, attributes)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            chosen = node.body if self._eval(node.test, env, attributes) else node.orelse
            return self._eval(chosen, env, attributes)
        if isinstance(node, (ast.Tuple, ast.List)):
            items = self._items(node.elts, env, attributes)
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.Dict) and all(key is not None for key in node.keys):
            return {
                self._eval(key, env, attributes): self._eval(value, env, attributes)
                for key, value in zip(node.keys, node.values, strict=True)
                if key is not None
            }
        if isinstance(node, ast.Subscript):
            return self._eval(node.value, env, attributes)[self._eval(node.slice, env, attributes)]
        if isinstance(node, ast.Call):
            return self._call(node, env, attributes)
        raise _Uncountable(f"expression {type(node).__name__}")

    def _items(self, elements: list[ast.expr], env: dict, attributes: dict) -> list:
        items: list = []
        for element in elements:
            if isinstance(element, ast.Starred):
                items.extend(self._eval(element.value, env, attributes))
            else:
                items.append(self._eval(element, env, attributes))
        return items

    def _call(self, node: ast.Call, env: dict, attributes: dict) -> Any:
        args = self._items(node.args, env, attributes)
        if any(keyword.arg is None for keyword in node.keywords):
            raise _Uncountable("**kwargs in a call")
        kwargs = {
            keyword.arg: self._eval(keyword.value, env, attributes)
            for keyword in node.keywords
            if keyword.arg
        }
        name = _layer_name(node.func)
        if name is not None:
            return _layer(name, args, kwargs)
        if isinstance(node.func, ast.Name) and node.func.id in self.classes:
            return self.instantiate(node.func.id, args, kwargs)
        if isinstance(node.func, ast.Name) and node.func.id in _BUILTINS and node.func.id not in env:
            if any(isinstance(arg, ModelSize) for arg in args):
                raise _Uncountable("a builtin applied to a layer")
            return _BUILTINS[node.func.id](*args, **kwargs)
        raise _Uncountable("a call the count cannot follow")


def _layer(name: str, args: list, kwargs: dict) -> ModelSize:
    """The size of ``nn.<name>(*args, **kwargs)``."""
    if name in _FREE_LAYERS:
        return ModelSize(0)
    if name in ("Sequential", "ModuleList", "ModuleDict"):
        if kwargs:
            raise _Uncountable(f"{name} with keyword arguments")
        layers = (
            args
            if name == "Sequential"
            else list(args[0].values() if name == "ModuleDict" else args[0])
            if args
            else []
        )
        if not all(isinstance(layer, ModelSize) for layer in layers):
            raise _Uncountable(f"{name} of something other than layers")
        return sum(layers, ModelSize(0))
    if name not in _LAYERS:
        raise _Uncountable(f"layer nn.{name}")
    names, defaults, size = _LAYERS[name]
    if len(args) > len(names) or set(kwargs) - set(names) or set(kwargs) & set(names[: len(args)]):
        raise _Uncountable(f"arguments of nn.{name}")
    bound = {**defaults, **dict(zip(names, args, strict=False)), **kwargs}
    missing = [argument for argument in names if argument not in bound]
    if missing:
        raise _Uncountable(f"nn.{name} without {missing}")
    return size(bound)


def _layer_name(func: ast.expr) -> str | None:
    """``X`` for ``nn.X`` and ``torch.nn.X``; None for any other callee."""
    if not isinstance(func, ast.Attribute):
        return None
    owner = func.value
    if isinstance(owner, ast.Name) and owner.id == "nn":
        return func.attr
    if (
        isinstance(owner, ast.Attribute)
        and owner.attr == "nn"
        and getattr(owner.value, "id", None) == "torch"
    ):
        return func.attr
    return None


def _is_module_base(node: ast.expr) -> bool:
    return _layer_name(node) == "Module" if isinstance(node, ast.Attribute) else False


def _is_super(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and getattr(node.func, "id", None) == "super"


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"
