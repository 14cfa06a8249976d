"""stdd_fast.kernels"""
