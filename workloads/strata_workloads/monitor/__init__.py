"""Monitors of a served model: pure functions from signals to a verdict.

Each monitor takes what the monitoring sidecar collected over a window (feedback records,
toxicity scores, input values) and the thresholds a FeedbackPolicy declares, and returns a
``MonitorResult``: the value, the verdict (OK, Breached, or InsufficientData when the window
holds fewer samples than the policy asks for), the sample count and the window.

  result.py     MonitorResult and the verdicts (the FeedbackPolicy status's spelling)
  feedback.py   approval rate, and bias as the gap in approval between groups of requests
                (pure Python: the operator imports it)
  toxicity.py   toxicity scores of texts with alt-profanity-check (an offline linear model
                in its wheel), and the toxic share of a window
  drift.py      population stability index and the two-sample Kolmogorov-Smirnov test on
                numeric features; on text, the length and token distributions (numpy, scipy)
  sketch.py     token and value sketches, and the PSI and chi-squared tests on counts
                (pure Python: the operator imports it)
  embedding_contract.py  what the embedding drift Job reads and reports (pydantic only)
  embedding.py  the embedding drift Job: sentence-transformers embeddings, k-means clusters
                of the reference, counts per cluster (the ``embed`` extra: torch)

Only embedding.py imports torch (inside the embedder image); toxicity.py and drift.py need
the ``monitor`` extra.
"""
