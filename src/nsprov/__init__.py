"""nsprov: permission-true Dovecot public namespaces for a shared mail spool."""
