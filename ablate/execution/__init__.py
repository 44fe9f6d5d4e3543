"""How runs are executed: a matrix file becomes factors and design rows, the runner turns them
into queued runs and claims them, and an executor (local processes or Ray) runs each claimed
attempt, which calls the trainer and commits every evaluation to the store as it comes."""
