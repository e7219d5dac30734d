"""Analysis of runs, pure like the rest of ``common``: rows in, rows, tables and PNG bytes out.

- ``report``: instance and RPC rows, the summary and its table, percentiles;
- ``plots``: a run's and a sweep's figures as PNG bytes;
- ``sweep``: a sweep's plan and its rows;
- ``capacity``: the demand a workload puts on a cloud (Little's law);
- ``fidelity``: how far a simulated run is from a real run of the same scenario.

Nothing here reads or writes files: the runners and the notebooks do.
"""
