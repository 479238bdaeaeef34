"""Small building blocks that several families share: activations by the names HF configs use,
and token packing (the real tokens of a padded batch as one (N, C) matrix, so that position-wise
layers skip the padding). Imports only torch."""

from functools import partial

import torch.nn.functional as F

ACTIVATIONS = {  # by the names in HF configs (hidden_act, activation_function)
    "gelu": F.gelu,  # exact (erf)
    "gelu_new": partial(F.gelu, approximate="tanh"),  # the tanh approximation (OpenAI's GPT code)
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


def pack_tokens(x, index):  # (B, T, C) -> (N, C): the rows at flat positions `index`
    return x.flatten(0, 1).index_select(0, index)


def unpack_tokens(x, index, B, T):  # (N, C) -> (B, T, C), zeros elsewhere
    return x.new_zeros(B * T, x.shape[-1]).index_copy(0, index, x).view(B, T, -1)
