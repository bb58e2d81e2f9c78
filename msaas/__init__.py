"""What every service of Music Separation as a Service shares: the job on the wire, settings, the queue,
the object store and the log bus."""
