"""Making the dLLMs RL jobs start from: ``cgrpo pretrain`` (a small model from scratch) and
``cgrpo adapt`` (an HF causal LM turned into a Dream-layout dLLM). Not part of a job."""
