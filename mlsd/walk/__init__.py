"""Walkthroughs: interview prompts as markdown whose fenced `mlsd-step` blocks are run against the
live stack (`mlsd walk`), and whose measured figures come from that run, never from the text."""
