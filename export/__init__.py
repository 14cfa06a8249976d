"""stdd_fast.export"""
