"""Helpers shared by the golden-data generators: tensors to JSON lists and back to layouts."""
import torch


def flat(t):
    """Logical (row-major NC...) order, as Python floats (exact for float32 and float64)."""
    return [float(v) for v in t.detach().contiguous().reshape(-1).tolist()]


def fmt_layout(t, channels_last):
    """t contiguous, or channels-last (4-d and 5-d)."""
    if not channels_last:
        return t.contiguous()
    return t.contiguous(memory_format=torch.channels_last if t.dim() == 4 else
                        torch.channels_last_3d)
