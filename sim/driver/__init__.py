"""The Locust binding: the SDK port over HTTP, protocol adapters and the inbox poller."""
