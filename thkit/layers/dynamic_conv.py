"""Dynamic convolution (Chen et al., CVPR 2020, "Dynamic Convolution: Attention over Convolution Kernels").

``K`` kernels mixed per sample by ``softmax(fc2(relu(fc1(GAP(c)))) / T)``, where the conditioning input ``c``
may differ from the convolved input (MCNet conditions the convolution of its memory on the query features).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


class KernelAttention(nn.Module):
    """The per-sample kernel weights: ``softmax(fc2(relu(fc1(avgpool(c)))) / temperature)`` (B, K).

    ``fc1`` has ``int(in_planes * ratio) + 1`` outputs and no bias (as the reference implementation).
    """

    def __init__(self, in_planes: int, ratio: float = 0.25, num_kernels: int = 4, temperature: float = 34.0):
        super().__init__()
        hidden = int(in_planes * ratio) + 1 if in_planes != 3 else num_kernels
        self.fc1 = nn.Conv2d(in_planes, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, num_kernels, 1, bias=True)
        self.temperature = float(temperature)
        for m in (self.fc1, self.fc2):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.fc2.bias)

    def forward(self, c: Tensor) -> Tensor:
        x = F.relu(self.fc1(F.adaptive_avg_pool2d(c, 1)))
        return F.softmax(self.fc2(x).flatten(1) / self.temperature, dim=1)


class DynamicConv2d(nn.Module):
    """``y = conv(x; sum_k a_k W_k, sum_k a_k b_k)`` with ``a = KernelAttention(cond)`` (one kernel per sample).

    ``forward(cond, x)``: ``cond`` (B, C_in, h', w') gives the attention, ``x`` (B, C_in, H, W) is convolved.
    Parameters ``weight`` (K, C_out, C_in, k, k), ``bias`` (K, C_out), ``attention.fc1``, ``attention.fc2``.
    """

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, ratio: float = 0.25, padding: int = 0,
                 num_kernels: int = 4, temperature: float = 34.0, bias: bool = True):
        super().__init__()
        self.in_planes, self.out_planes, self.kernel_size = in_planes, out_planes, kernel_size
        self.padding, self.num_kernels = padding, num_kernels
        self.attention = KernelAttention(in_planes, ratio, num_kernels, temperature)
        self.weight = nn.Parameter(torch.empty(num_kernels, out_planes, in_planes, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(num_kernels, out_planes)) if bias else None
        for i in range(num_kernels):
            nn.init.kaiming_uniform_(self.weight[i])

    def forward(self, cond: Tensor, x: Tensor) -> Tensor:
        a = self.attention(cond)  # (B, K)
        if torch.onnx.is_in_onnx_export():
            return self._per_kernel(a, x)
        b, c, h, w = x.shape
        weight = torch.mm(a, self.weight.view(self.num_kernels, -1))
        weight = weight.view(b * self.out_planes, self.in_planes, self.kernel_size, self.kernel_size)
        bias = None if self.bias is None else torch.mm(a, self.bias).view(-1)
        out = F.conv2d(x.reshape(1, b * c, h, w), weight, bias=bias, padding=self.padding, groups=b)
        return out.view(b, self.out_planes, out.size(-2), out.size(-1))

    def _per_kernel(self, a: Tensor, x: Tensor) -> Tensor:
        """The same map for an ONNX export, whose convolutions need a kernel of known shape: at batch 1 (thkit's
        exported graphs) the mixed kernel with sizes from the module, not from ``x.shape``; otherwise
        ``sum_k a_k conv(x; W_k) + sum_k a_k b_k``, one convolution with all ``K`` kernels (``K`` times the FLOPs).
        Equal to float32 rounding (tests/test_export.py)."""
        if x.shape[0] == 1:
            weight = (a @ self.weight.reshape(self.num_kernels, -1)).reshape(
                self.out_planes, self.in_planes, self.kernel_size, self.kernel_size)
            bias = None if self.bias is None else (a @ self.bias).reshape(self.out_planes)
            return F.conv2d(x, weight, bias=bias, padding=self.padding)
        weight = self.weight.reshape(self.num_kernels * self.out_planes, self.in_planes, self.kernel_size,
                                     self.kernel_size)
        out = F.conv2d(x, weight, padding=self.padding)
        out = out.unflatten(1, (self.num_kernels, self.out_planes))  # (B, K, C_out, H, W)
        out = (out * a[:, :, None, None, None]).sum(1)
        if self.bias is not None:
            out = out + (a @ self.bias)[:, :, None, None]
        return out
