// implemented by the trainer work (issue 5)
