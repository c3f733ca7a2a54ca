"""Prometheus metrics and the per-worker counts behind them and behind ``mtasts-resolver status``.

:mod:`.counting` counts what passes (lookups, resolutions), :mod:`.snapshot`
is one worker's numbers as a value and how several add up, :mod:`.share`
writes and reads them as files, :mod:`.exposition` renders the text format
and :mod:`.http` serves it.
"""
