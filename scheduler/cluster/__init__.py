"""The cluster read: one read of the store (`read`), and the pure readers that turn its records
into the policy's inputs: job and node views (`views`), fair-share inputs (`shares`) and budget
state (`budgets`)."""
