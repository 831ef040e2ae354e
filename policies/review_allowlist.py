"""The static review's allowlist: the modules researcher code may import and the module attributes it may use.

Plain data, dotted names spelled from the module's real name (``torch.nn.functional.relu``, whatever alias
the code gives ``torch.nn.functional``). ``policies.static_review`` resolves every attribute chain that
starts at an imported module against these lists; anything else is an error that names the dotted path.

How the lists were chosen: everything fedimg's job template uses (``policies.template``), what the models
in ``researcher/models.py`` use, and what a plain CNN, MLP, ResNet-style or small attention model needs
(layer classes, functional ops, tensor constructors, elementwise and reduction math, dtypes). Left out on
purpose: every subpackage that is not needed for that (``torch.optim`` beyond the two optimisers the
template builds, ``torch.cuda`` beyond ``is_available``, ``torch.nn.init`` beyond the initialisers), and
anything that reads or writes files, registers process-wide state (hooks, error callbacks, print options,
default dtypes, thread counts), hands out uninitialised memory (``empty``) or reaches native code.
An entry is a function, class, dtype or constant, never a module: ``tests/policies/
test_static_review_allowlist.py`` imports each one and checks it exists and that no public attribute of it
is a module. Adding an entry is a decision about what every site's review accepts: add it here with the
template or model line that needs it.

Examples
--------
>>> "torch.nn.Conv2d" in ALLOWED_ATTRIBUTES, "torch.xpu" in ALLOWED_ATTRIBUTES
(True, False)
>>> sorted(ALLOWED_MODULES)
['math', 'numpy', 'torch', 'torch.nn', 'torch.nn.functional']
"""

from __future__ import annotations

# The module paths an import may name (with any alias), and nothing below them: `import torch.optim`,
# `from torch import xpu` and `import numpy.ma` are refused.
ALLOWED_MODULES = frozenset({"torch", "torch.nn", "torch.nn.functional", "numpy", "math"})


def _under(module: str, names: str) -> frozenset[str]:
    """``module.name`` for every whitespace-separated name in ``names``."""
    return frozenset(f"{module}.{name}" for name in names.split())


# torch: tensor constructors, math and dtypes; the template's seed, no_grad, randperm, Generator and its two
# optimisers; the device helpers a template with `device = "auto"` uses.
TORCH_ATTRIBUTES = _under(
    "torch",
    """
    Tensor tensor as_tensor from_numpy is_tensor numel device dtype Generator Size
    manual_seed no_grad enable_grad set_grad_enabled inference_mode is_grad_enabled
    zeros ones full zeros_like ones_like full_like arange linspace logspace eye
    rand randn randint randperm rand_like randn_like randint_like bernoulli multinomial normal
    cat concat stack hstack vstack split chunk flatten reshape squeeze unsqueeze transpose permute
    movedim swapaxes t narrow index_select gather scatter masked_fill masked_select take take_along_dim
    flip roll tile repeat_interleave broadcast_to tril triu diag diagonal outer
    abs neg sign sqrt rsqrt square pow exp exp2 expm1 log log2 log10 log1p sin cos tan tanh sinh cosh
    asin acos atan atan2 sigmoid relu erf erfc floor ceil round trunc frac fmod remainder reciprocal
    clamp clip clamp_min clamp_max where maximum minimum lerp add sub mul div true_divide floor_divide
    sum mean std var std_mean var_mean prod cumsum cumprod max min amax amin argmax argmin
    median mode logsumexp softmax log_softmax norm dist cdist cosine_similarity
    topk sort argsort unique bincount histc count_nonzero nonzero all any
    isfinite isnan isinf isclose allclose equal eq ne lt le gt ge
    matmul mm bmm mv dot einsum addmm baddbmm tensordot kron
    float float16 float32 float64 half bfloat16 double
    int int8 int16 int32 int64 uint8 long short bool complex64
    pi e inf nan
    """,
) | frozenset(
    {
        "torch.optim.SGD",  # the template's optimisers
        "torch.optim.Adam",
        "torch.cuda.is_available",  # device = "auto"
        "torch.cuda.device_count",
    }
)

# torch.nn: layer, container and loss classes, Parameter, and the weight initialisers of torch.nn.init.
NN_ATTRIBUTES = _under(
    "torch.nn",
    """
    Module Parameter Sequential ModuleList ModuleDict ParameterList ParameterDict Identity
    Linear Bilinear Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d
    BatchNorm1d BatchNorm2d BatchNorm3d GroupNorm LayerNorm InstanceNorm1d InstanceNorm2d InstanceNorm3d
    LocalResponseNorm
    ReLU ReLU6 LeakyReLU PReLU ELU SELU CELU GELU SiLU Mish Sigmoid Tanh Hardswish Hardsigmoid Hardtanh
    Softplus Softmax LogSoftmax Softmax2d GLU
    Dropout Dropout1d Dropout2d Dropout3d AlphaDropout
    MaxPool1d MaxPool2d MaxPool3d AvgPool1d AvgPool2d AvgPool3d
    AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d
    AdaptiveMaxPool1d AdaptiveMaxPool2d AdaptiveMaxPool3d
    Flatten Unflatten Upsample UpsamplingNearest2d UpsamplingBilinear2d PixelShuffle PixelUnshuffle
    ZeroPad2d ConstantPad2d ReflectionPad2d ReplicationPad2d
    Embedding MultiheadAttention TransformerEncoder TransformerEncoderLayer LSTM GRU RNN
    CrossEntropyLoss NLLLoss MSELoss L1Loss SmoothL1Loss BCEWithLogitsLoss
    """,
) | _under(
    "torch.nn.init",
    """
    kaiming_normal_ kaiming_uniform_ xavier_normal_ xavier_uniform_ normal_ uniform_ trunc_normal_
    constant_ zeros_ ones_ orthogonal_ calculate_gain
    """,
)

# torch.nn.functional: activations, convolutions, pooling, normalisation, resampling, dropout and losses
# (the template's cross_entropy and nll_loss among them).
FUNCTIONAL_ATTRIBUTES = _under(
    "torch.nn.functional",
    """
    relu relu6 leaky_relu prelu elu selu celu gelu silu mish sigmoid tanh hardswish hardsigmoid hardtanh
    softplus softmax log_softmax softmin glu logsigmoid
    linear bilinear conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d
    max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d
    adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
    dropout dropout1d dropout2d dropout3d alpha_dropout
    batch_norm layer_norm group_norm instance_norm local_response_norm normalize
    interpolate pad pixel_shuffle pixel_unshuffle unfold fold grid_sample affine_grid
    one_hot embedding scaled_dot_product_attention cosine_similarity pairwise_distance
    cross_entropy nll_loss mse_loss l1_loss smooth_l1_loss huber_loss kl_div
    binary_cross_entropy binary_cross_entropy_with_logits
    """,
)

# numpy: array constructors, math and dtypes (the template's zeros, add.at, trace, asarray and int64 among
# them; ndarray for isinstance checks).
NUMPY_ATTRIBUTES = _under(
    "numpy",
    """
    ndarray dtype asarray array zeros ones full zeros_like ones_like full_like arange linspace eye
    concatenate stack hstack vstack split reshape resize transpose squeeze expand_dims ravel
    flip roll tile repeat where clip take argsort sort unique bincount
    add subtract multiply divide power mod abs sign sqrt square exp log log1p log2 log10
    sin cos tan tanh floor ceil round maximum minimum
    sum mean std var prod cumsum max min argmax argmin trace dot matmul einsum outer
    isfinite isnan isinf isclose allclose array_equal
    float16 float32 float64 int8 int16 int32 int64 uint8 bool_
    pi e inf nan newaxis
    """,
) | frozenset({"numpy.add.at"})  # the template's confusion matrix

# math: its functions and constants (the module holds nothing else but a few, all listed here).
MATH_ATTRIBUTES = _under(
    "math",
    """
    pi e tau inf nan sqrt isqrt exp expm1 log log2 log10 log1p pow floor ceil trunc fabs copysign fmod modf
    frexp ldexp cos sin tan acos asin atan atan2 cosh sinh tanh acosh asinh atanh erf erfc gamma lgamma
    isfinite isnan isinf isclose prod fsum comb perm factorial gcd lcm hypot dist radians degrees
    """,
)

ALLOWED_ATTRIBUTES = (
    TORCH_ATTRIBUTES | NN_ATTRIBUTES | FUNCTIONAL_ATTRIBUTES | NUMPY_ATTRIBUTES | MATH_ATTRIBUTES
)
