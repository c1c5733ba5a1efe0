"""``nnx xor``: tutorial 001's driver, fed through a pipe, against the tutorial's own network."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest


class XORNeuralNetwork:
    """Tutorial 001's class, as published, with its ``np.random.rand`` draws from ``RandomState(seed)``."""

    def __init__(self, inputs, expected_output, seed=0):
        rand = np.random.RandomState(seed).rand
        self.hidden_weight = rand(2, 2)
        self.hidden_bias = rand(1, 2)
        self.output_weight = rand(2, 1)
        self.output_bias = rand(1, 1)
        self.input_vector = inputs
        self.expected_output = expected_output

    @staticmethod
    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    @staticmethod
    def sigmoid_derivative(x):
        return x * (1 - x)

    def feedforward(self):
        self.hidden_layer_output = self.sigmoid(np.dot(self.input_vector, self.hidden_weight) + self.hidden_bias)
        self.predicted_output = self.sigmoid(np.dot(self.hidden_layer_output, self.output_weight) + self.output_bias)

    def backpropagation(self):
        error_predicted_output = self.expected_output - self.predicted_output
        d_predicted_output = error_predicted_output * self.sigmoid_derivative(self.predicted_output)
        error_hidden_layer = d_predicted_output.dot(self.output_weight.T)
        d_hidden_layer = error_hidden_layer * self.sigmoid_derivative(self.hidden_layer_output)
        self.output_weight += self.hidden_layer_output.T.dot(d_predicted_output)
        self.output_bias += np.sum(d_predicted_output, axis=0, keepdims=True)
        self.hidden_weight += self.input_vector.T.dot(d_hidden_layer)
        self.hidden_bias += np.sum(d_hidden_layer, axis=0, keepdims=True)

    def train(self, epoch):
        for _ in range(epoch):
            self.feedforward()
            self.backpropagation()

    def predict(self, data):
        hidden = self.sigmoid(np.dot(data, self.hidden_weight) + self.hidden_bias)
        return self.sigmoid(np.dot(hidden, self.output_weight) + self.output_bias)


def xor(text: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``nnx xor`` with ``text`` piped in; output decoded as written ('\r' kept)."""
    done = subprocess.run([sys.executable, "-m", "nnx", "xor", *args], input=text.encode(), capture_output=True,
                          timeout=300)
    done.stdout, done.stderr = done.stdout.decode(), done.stderr.decode()
    return done


@pytest.fixture(scope="module")
def tutorial():
    network = XORNeuralNetwork(np.array([[0, 0], [0, 1], [1, 0], [1, 1]]), np.array([[0, 1, 1, 0]]).T)
    network.train(epoch=5000)  # the driver's main()
    return network


def test_driver_trains_then_answers_until_q(tutorial):
    done = xor("0\n0\n0\n1\n1\n0\n1\n1\nq\n")
    assert done.returncode == 0, done.stderr
    progress = done.stdout.split("\n")[0].split("\r")
    assert progress[0] == "1% trained" and progress[-2] == "100% trained" and len(progress) == 101
    answers = re.findall(r"\((\d) \^ (\d)\) = ([0-9.e-]+)", done.stdout)
    assert [(int(x), int(y)) for x, y, _ in answers] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for x, y, p in answers:
        expected = tutorial.predict(np.array([[int(x), int(y)]]))[0, 0]
        assert float(p) == pytest.approx(expected, rel=1e-10)
    assert done.stdout.count("Enter x: ") == 5 and done.stdout.count("Enter y: ") == 4
    assert done.stdout.rstrip().endswith("Enter x: Bye")


def test_end_of_input_says_bye():
    done = xor("1\n", "--passes", "100")
    assert done.returncode == 0
    assert done.stdout.endswith("Enter x: Enter y: \nBye\n")


def test_not_a_number_asks_again():
    done = xor("abc\n1\n0\nq\n", "--passes", "100")
    assert "'abc' is not a number: enter 0 or 1 (q quits)" in done.stdout
    assert re.search(r"\(1 \^ 0\) = [0-9.]+", done.stdout)


def test_ctrl_c_at_the_prompt_says_bye():
    proc = subprocess.Popen([sys.executable, "-m", "nnx", "xor", "--passes", "100"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, deadline = b"", time.monotonic() + 120
    while not seen.endswith(b"Enter x: ") and time.monotonic() < deadline:
        chunk = os.read(proc.stdout.fileno(), 1024)
        if not chunk:
            break
        seen += chunk
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert (seen + rest).decode().endswith("Enter x: \nBye\n")
    assert b"Traceback" not in err
