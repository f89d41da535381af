"""Waterlogging (内涝) risk: SWMM nowcast, surface ponding, risk grades and alerts, a fast surrogate."""
