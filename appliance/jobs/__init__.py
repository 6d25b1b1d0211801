"""The job queue kept in the catalog, and the worker process that runs jobs (training, export, import)."""
