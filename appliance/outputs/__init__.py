"""Line outputs: the durable outbox, MQTT, webhooks, OPC UA and Modbus TCP, and the process that runs them."""
