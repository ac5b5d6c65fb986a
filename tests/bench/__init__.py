"""`make bench`: throughput and latency figures for the running system (not a test).

    .venv/bin/python -m tests.bench.run [--help]

Starts the whole stack (PostgreSQL database, embedded Tansu broker, TLS mailbox, the three
services) with `opspor_shared.devstack.stack.Stack`, then measures

  (a) batch ingest throughput over HTTP with 1, 2 and 4 keep-alive connections, and how fast
      the threshold-worker absorbs what was ingested;
  (b) end-to-end latency at a steady open-loop rate: from the HTTP response of the
      registration that completes a 5-day run to the concern mail stored in the mailbox;
  (c) without the stack, in a database of its own: the threshold-worker re-evaluating a full
      school year for 100,000 pupils (about 1.4 million registrations), from the database to
      the concern diff, with the worker's peak memory (tests/bench/reevaluate.py).

Figures are printed as a table and written to var/bench/results.json. Nothing is asserted.
"""
