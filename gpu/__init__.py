"""Batched inference engine and custom CUDA/Triton kernels, each with a CPU reference path."""
