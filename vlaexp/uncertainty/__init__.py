"""Runtime failure prediction from Random Network Distillation on a policy's vision tokens
(FIPER, Roemer et al., NeurIPS 2025): token stores, RND per (task type x camera), scoring."""
