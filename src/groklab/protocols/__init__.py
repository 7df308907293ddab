"""Mechanism protocols: compositions of stored runs that test why grokking happens.

`components` (C_mem / C_gen, found again by config), `hooks` (log-spaced snapshots, correct-class
logit), `mixture` (§5.1), `efficiency` (§5.2), `fourier` (Nanda et al.), `cli` (their commands).
"""
