"""The small order-processing application that ``poolwatch demo`` runs through a pool incident.

It lives outside the ``poolwatch`` package on purpose: poolwatch reports where the application
borrowed a connection and skips its own frames, so the demo's application code must be the
application's, not poolwatch's.
"""
