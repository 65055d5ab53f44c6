"""Benchmarks of qwen_edit_async against the hand-written pattern and the dashscope SDK.

Run ``python -m benchmarks`` (or ``--quick``); see ``benchmarks/README.md``.
"""
