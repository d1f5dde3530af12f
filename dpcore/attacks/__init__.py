"""Attacks on trained models and an empirical audit of the DP guarantee.

- :mod:`dpcore.attacks.extraction`: canary reports and what a causal language model completes (paper, Fig. 1).
- :mod:`dpcore.attacks.reconstruction`: masked reconstruction of Findings by a masked LM (paper, Fig. 2).
- :mod:`~dpcore.attacks.lm`, :mod:`~.lm_train`, :mod:`~.canaries`: their small LMs, DP training, exposure.
- :mod:`dpcore.attacks.membership`: membership inference on the classifiers (loss threshold, calibrated).
- :mod:`dpcore.attacks.audit`: a one-run privacy audit (Steinke, Nasr and Jagielski, 2023).
"""
