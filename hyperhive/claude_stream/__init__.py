"""claude's ``--output-format stream-json`` stdout on the host: each line parsed once into a typed
event (``events``), a turn's events folded into its outcome (``outcome``), and events rendered for
the agent page and ``hive logs`` (``render``)."""
