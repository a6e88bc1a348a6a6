"""Triton kernels with pure-PyTorch references beside them (``sosm.kernels``)."""
