"""Measuring what a pipeline does on the user's own data (`winnow eval`): a scorer against labelled
documents, a finished run against labelled ids, a dedup stage against exact Jaccard, decontamination
against planted benchmark items."""
