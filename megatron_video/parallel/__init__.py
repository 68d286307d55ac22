"""Process groups and parallel execution: megatron-core's parallel_state owns every group."""
