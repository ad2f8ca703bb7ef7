"""Feedback: `feedback-returned` in; the registration moves on, the GP hears back."""
