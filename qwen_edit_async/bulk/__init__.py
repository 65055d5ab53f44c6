"""The bulk runner behind ``qwen-edit run``: manifest, journal, results, progress, report.

It sits on top of the client library and uses only its public surface and a few core helpers;
nothing in the core imports this package.

>>> from qwen_edit_async.bulk._manifest import stable_id
>>> len(stable_id({"prompt": "a red hat", "images": ["cat.png"]}))
16
"""
