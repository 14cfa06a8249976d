"""stdd_fast.training"""
