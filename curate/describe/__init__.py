"""The model stage: prompts, answers, cache, retrieval, backends; on Ray or local."""
