"""Models the stages use and the code that trains them (fastText, causal-LM and transformer scorers).

Scorers never import Ray: a stage wraps them in Ray actors.
"""
