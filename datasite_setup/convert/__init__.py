"""The converter: a hospital's image collection into the federated format v2.

One module per step, in the order ``convert`` runs them: ``sources`` (scan one of
the three input layouts), ``imaging`` (decode, validate, standardise), ``dedup``,
``pseudonym`` and ``secret`` (keyed pseudonyms), ``quarantine`` (rejected inputs),
``partition`` (one partitioner per scheme, then the train/val split),
``federated_format`` (write the output atomically), ``pipeline`` (the whole run),
``verify`` and ``federation_report`` (the per-client table, ``report.md`` and the
label plot); ``client_data`` reads one client's partition back and ``sample_data``
writes the demo collection. Nothing here imports the running site.
"""
