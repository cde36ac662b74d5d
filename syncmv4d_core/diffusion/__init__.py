"""Rectified-flow noising, targets, timestep sampling and losses."""
