"""The course machinery, not a VLM concept: the checks that grade the exercise notebooks
(`grading`), the generator of exercises/ from solutions/ (`exercises`), the grader that scores
learner notebooks (`grade`) and the GitHub Classroom template (`classroom`)."""

# The MIME type of a check's structured outcome (see grading.CheckResult); `minivlm grade` reads
# only this, never the printed line. Here, not in grading, so that the grader needn't import torch.
OUTCOME_MIME = "application/vnd.minivlm.check+json"
