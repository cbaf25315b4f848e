"""gpvae-bench harness: spec -> plan -> launch -> run -> record -> aggregate -> render."""
