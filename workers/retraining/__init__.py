"""The retraining job (`clad retrain`): confirmed frames, champion vs challenger on
held-out frames, one run at a time (lock), cron schedules.

May import pipeline and engine (training included).
"""
