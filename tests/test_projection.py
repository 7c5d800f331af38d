"""Token projections through oneDNN at CPU inference, and the separable position-embedding resize:
the same values as F.linear / timm's Mlp / detectron2's get_abs_pos."""
import pytest
import torch
import torch.nn as nn
from detectron2.modeling.backbone.utils import get_abs_pos
from timm.layers import Mlp

from hpvit_d2.modeling import projection
from hpvit_d2.modeling.position import bicubic_matrix, resized_abs_pos
from hpvit_d2.modeling.projection import OneDNNLinear, onednn_applies, token_linear


def _calls(module):
    """A list that grows by one each time module.forward runs."""
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_onednn_linear_is_available_on_this_cpu_build():
    """The speed-up must not silently be off where PyTorch ships oneDNN (as here)."""
    assert torch.backends.mkldnn.is_available()
    assert projection._ONEDNN_LINEAR


@pytest.mark.parametrize("shape", [(1, 7, 9, 48), (2, 5, 6, 48), (37, 48)])
@pytest.mark.parametrize("bias", [True, False])
def test_token_linear_equals_f_linear_and_runs_through_onednn_at_inference(shape, bias):
    linear = nn.Linear(48, 80, bias=bias)
    x = torch.randn(shape)
    calls = _calls(linear)
    with torch.no_grad():
        expected = torch.nn.functional.linear(x, linear.weight, linear.bias)
        got = token_linear(linear, x)
        strided = token_linear(linear, x[..., ::2, :]) if x.dim() == 4 else None
    assert calls == []  # oneDNN, not nn.Linear.forward
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    if strided is not None:
        torch.testing.assert_close(strided, expected[..., ::2, :], atol=1e-5, rtol=1e-5)


class _Projection(nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.linear = linear

    def forward(self, x):
        return token_linear(self.linear, x)


def test_training_tracing_and_other_dtypes_keep_f_linear():
    linear = nn.Linear(16, 8)
    x = torch.randn(2, 3, 16)
    calls = _calls(linear)
    token_linear(linear, x).sum().backward()  # autograd on: nn.Linear
    assert len(calls) == 1 and linear.weight.grad is not None
    with torch.no_grad():
        assert not onednn_applies(x.double())
        assert onednn_applies(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not onednn_applies(x)
        traced = torch.jit.trace(_Projection(linear), (x,))
    assert "linear" in str(traced.graph) and "mkldnn" not in str(traced.graph)


def test_onednn_linears_in_timm_mlp_equal_nn_linear_with_gradients():
    """OneDNNLinear (what the CPU inference step makes a block's projections): the same state
    dict and outputs as nn.Linear, and nn.Linear's forward with autograd on."""
    mlp = Mlp(48, 96).eval()
    fast = Mlp(48, 96).eval()
    fast.fc1.__class__ = fast.fc2.__class__ = OneDNNLinear
    fast.load_state_dict(mlp.state_dict())
    x = torch.randn(1, 6, 10, 48)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), mlp(x), atol=1e-5, rtol=1e-5)
    fast(x).sum().backward()
    mlp(x).sum().backward()
    torch.testing.assert_close(fast.fc1.weight.grad, mlp.fc1.weight.grad, atol=0, rtol=0)


@pytest.mark.parametrize("cls_token", [True, False])
@pytest.mark.parametrize("hw", [(64, 64), (20, 33), (7, 5), (14, 14)])
def test_resized_abs_pos_equals_detectron2_with_gradients(cls_token, hw):
    grid = torch.randn(1, 14 * 14 + int(cls_token), 24)
    ours_in = grid.clone().requires_grad_()
    d2_in = grid.clone().requires_grad_()
    got = resized_abs_pos(ours_in, cls_token, hw)
    expected = get_abs_pos(d2_in, cls_token, hw)
    assert got.shape == (1, *hw, 24) and got.is_contiguous()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    weights = torch.randn(got.shape)
    (got * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(ours_in.grad, d2_in.grad, atol=1e-4, rtol=1e-5)


def test_bicubic_matrix_rows_sum_to_one_and_keep_its_dtype_under_autocast():
    matrix = bicubic_matrix(14, 50, torch.float32, "cpu")
    assert matrix.shape == (50, 14)
    torch.testing.assert_close(matrix.sum(1), torch.ones(50))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert resized_abs_pos(torch.randn(1, 16, 8), False, (9, 9)).dtype == torch.float32


def test_resized_abs_pos_names_a_grid_that_is_not_square():
    with pytest.raises(ValueError, match="15 entries, not a square grid"):
        resized_abs_pos(torch.randn(1, 15, 8), False, (4, 4))
