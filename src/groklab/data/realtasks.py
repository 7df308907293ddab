"""Real-data tasks (MNIST, Wine Quality) — registered in the real-data issue."""
