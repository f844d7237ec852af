"""The ground floor: errors, files, paths, processes, progress, the ledger, rendering, reports.

Imports no other room of core."""
