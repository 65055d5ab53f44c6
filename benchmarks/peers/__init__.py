"""The peers a benchmark compares, each run in its own process by ``benchmarks.run``.

- ``library``: this project's ``QwenEditClient.edit_many``.
- ``baseline``: the hand-written pattern (one aiohttp session, a semaphore, a fixed 1 s poll).
- ``dashscope_sdk``: the official SDK's ``AioMultiModalConversation.call`` with its defaults.
- ``payload``: encoding three large local images, the library against ``base64.b64encode``.

A peer reads one JSON spec from ``argv[1]``, does its work, and prints one line
``BENCH-RESULT {json}`` on stdout with its own wall time, CPU time and peak RSS, so each
peer's cost is measured in its own process.
"""
