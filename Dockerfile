FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY core core
COPY analysis analysis
COPY demo demo
COPY models models
COPY workers workers
COPY service service
COPY cli cli
COPY migrations migrations
COPY alembic.ini ./
RUN pip install .
EXPOSE 8000
CMD ["foodlab", "api", "--host", "0.0.0.0", "--port", "8000"]
