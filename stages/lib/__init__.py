"""Helpers a stage keeps beside its module: heuristics' spaCy-exact words (`spacy_words`), pack's
algorithms (`packing`), ingest's WARC reader (`warc`). Stage discovery does not import them."""
