"""What `cnncompile check` replaces: build the seed model in Keras and print its summary."""

from keras import layers, models

model = models.Sequential([
    layers.Input((28, 28, 1)),
    layers.Conv2D(32, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
    layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
    layers.Conv2D(64, (3, 3), activation="relu"), layers.Flatten(),
    layers.Dense(64, activation="relu"), layers.Dense(10, activation="softmax"),
])
model.summary()
