"""Text computed from facts: template descriptions, VQA, the text-fact check."""
