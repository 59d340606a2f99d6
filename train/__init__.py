"""Training: datasets, synthetic generator, teacher, fused student, distillation, evaluation."""
