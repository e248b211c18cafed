"""The job's ``input`` → one validated, frozen request, or one clear error.

- :mod:`worker.request.model`: what a validated job is (frozen dataclasses, a leaf the tasks import);
- :mod:`worker.request.rules`: the rules engine (problems, value parsers, numeric and choice rules);
- :mod:`worker.request.options`: the option table, its presets and the task defaults;
- :mod:`worker.request.fields`: the top-level fields (task, prompts, media inputs, LoRAs, output);
- :mod:`worker.request.parse`: :func:`~worker.request.parse.parse_request`, which runs them.
"""
