RNN_OPS: list[str] = []
